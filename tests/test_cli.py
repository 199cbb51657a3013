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


def test_every_command_uses_the_one_runner():
    """No command prints its own error lines: only keras_coatnet/cli.py writes ": error:"."""
    sources = [p for d in ("export", "training", "keras_coatnet", "examples") for p in (ROOT / d).rglob("*.py")]
    printing = [str(p.relative_to(ROOT)) for p in sources
                if "error: " in p.read_text() and "print(" in p.read_text() and p.name != "cli.py"
                and any("print(f\"error" in line or "print(\"error" in line or ": error: " in line
                        for line in p.read_text().splitlines())]
    assert printing == []


@pytest.mark.parametrize("entry, prog, argv", [
    ("export.__main__", "export", ["/nonexistent/m.keras", "/tmp/out", "--formats", "fp32"]),
    ("training.train", "train", ["--weights", "/nonexistent/w.keras", "--preset", "digits", "--epochs", "1"]),
    ("keras_coatnet.convert", "convert", ["coatnet_micro", "/nonexistent/c.safetensors", "/tmp/o.keras"]),
])
def test_every_command_answers_bad_input_with_one_line_and_exit_2(entry, prog, argv, capsys, tmp_path,
                                                                  monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    assert importlib.import_module(entry).main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: ") and "nonexistent" in err[0], err


def test_tflite_predict_imports_no_tensorflow():
    code = ("import sys, examples.tflite_predict as t; code = t.main(['/nonexistent.tflite', '/x.jpg']); "
            "print(code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr[-2000:]  # its one-line error, no TF
