"""The one CLI runner (keras_coatnet.cli): exit codes and one-line messages, used by every command of the project."""

import subprocess
import sys
from pathlib import Path

import pytest

from export.errors import ExportError, ValidationError
from keras_coatnet.cli import run_main
from training.callbacks import TrainingDiverged
from training.strategy import StrategyUnavailable

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("exc, code, line", [
    (ValidationError("fp16: max_rel_error=0.5"), 1, "prog: validation failed: fp16: max_rel_error=0.5"),
    (TrainingDiverged("loss is NaN\nat step 4"), 3, "prog: error: loss is NaN at step 4"),
    (ExportError("unknown format 'int4'"), 2, "prog: error: unknown format 'int4'"),
    (StrategyUnavailable("no TPU found"), 2, "prog: error: no TPU found"),
    (FileNotFoundError("model.keras not found"), 2, "prog: error: model.keras not found"),
    (RuntimeError("disk on fire\nmore"), 2, "prog: error: disk on fire (RuntimeError; rerun with --debug for the "
                                            "traceback)"),
    (KeyboardInterrupt(), 130, "prog: interrupted"),
])
def test_exit_codes_and_one_line(exc, code, line, capsys):
    def body(_):
        raise exc

    assert run_main("prog", lambda argv: argv, body, []) == code
    assert capsys.readouterr().err == line + "\n"
    with pytest.raises(type(exc)):
        run_main("prog", lambda argv: argv, body, ["--debug"])


# Every command of the project, with an input it must refuse: (module, prog, argv).
COMMANDS = [
    ("export.__main__", "export", ["/nonexistent/m.keras", "/tmp/out", "--formats", "fp32"]),
    ("export.benchmark", "export.benchmark", ["/nonexistent/m.keras", "--formats", "fp32"]),
    ("training.train", "train", ["--weights", "/nonexistent/w.keras", "--preset", "digits", "--epochs", "1"]),
    ("keras_coatnet.convert", "convert", ["coatnet_micro", "/nonexistent/c.safetensors", "/tmp/o.keras"]),
    ("examples.demo", "python -m examples.demo", ["--runs-dir", "/nonexistent/runs", "--epochs", "0"]),
    ("examples.features", "python -m examples.features", ["--limit", "5"]),
    ("examples.finetune_folder", "python -m examples.finetune_folder", ["--data", "/nonexistent/folder"]),
    ("examples.tflite_predict", "python -m examples.tflite_predict", ["/nonexistent/m.tflite", "/x.png"]),
]


def _modules_with_a_main():
    import importlib
    import pkgutil

    found = []
    for package in ("export", "training", "keras_coatnet", "examples"):
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
            module = importlib.import_module(info.name)
            if getattr(getattr(module, "main", None), "__module__", None) == info.name:
                found.append(info.name)
    return sorted(found)


def test_the_command_table_lists_every_command():
    """Every module of the project with its own main() is in COMMANDS, so the test below runs it."""
    assert _modules_with_a_main() == sorted(module for module, _, _ in COMMANDS)


@pytest.mark.parametrize("entry, prog, argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_answers_bad_input_with_one_line_and_exit_2(entry, prog, argv, capsys, tmp_path,
                                                                  monkeypatch):
    """Each command runs through the one runner (keras_coatnet.cli.run_main, watched here) and refuses bad input
    with that runner's one line: no command prints an error line of its own."""
    import importlib

    import keras_coatnet.cli

    calls, runner = [], keras_coatnet.cli.run_main

    def watched(prog, *args, **kwargs):
        calls.append(prog)
        return runner(prog, *args, **kwargs)

    monkeypatch.setattr(keras_coatnet.cli, "run_main", watched)
    monkeypatch.chdir(tmp_path)
    assert importlib.import_module(entry).main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert calls == [prog]
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err


def test_tflite_predict_imports_no_tensorflow():
    code = ("import sys, examples.tflite_predict as t; code = t.main(['/nonexistent.tflite', '/x.jpg']); "
            "print(code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr[-2000:]  # its one-line error, no TF
