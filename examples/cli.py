"""Shared CLI conventions of the examples: quiet TensorFlow, one-line errors unless --debug, step messages."""

import importlib.util
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUNNER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "keras_coatnet", "cli.py")


def _runner():
    """The project's one CLI runner, `keras_coatnet/cli.py` (standard library only). Loaded from its file
    unless the package is imported already: importing it through `keras_coatnet` imports Keras and TensorFlow,
    which tflite_predict.py (LiteRT, NumPy and Pillow only) must not need."""
    if "keras_coatnet.cli" in sys.modules:
        return sys.modules["keras_coatnet.cli"]
    spec = importlib.util.spec_from_file_location("keras_coatnet_cli_standalone", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(prog, parser, body, argv=None):
    """``body(parser.parse_args(argv))`` -> exit code, through the project's one CLI runner
    (``keras_coatnet.cli.run_main``: one-line errors unless --debug, the project's exit codes)."""
    return _runner().run_main(prog, parser.parse_args, body, argv)


class Steps:
    """Prints numbered step headers with the elapsed time: ``[2/5] exporting ... (0m41s)``."""

    def __init__(self, total, stream=None):
        self.total, self.done, self.t0 = total, 0, time.time()
        self.stream = stream or sys.stdout

    def elapsed(self):
        return time.time() - self.t0

    def start(self, what):
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {what}  ({format_seconds(self.elapsed())} elapsed)",
              file=self.stream, flush=True)

    def log(self, msg):
        print(f"    {msg}", file=self.stream, flush=True)


def format_seconds(s):
    """Seconds -> '4m07s'."""
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s"
