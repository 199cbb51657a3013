"""Shared CLI conventions of the examples: quiet TensorFlow, one-line errors unless --debug, step messages."""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from export import cli  # noqa: E402 - after the log level is set



def run_main(prog, parser, body, argv=None):
    """``body(parser.parse_args(argv))`` -> exit code, through the project's one CLI runner
    (``keras_coatnet.cli.run_main``: one-line errors unless --debug, the project's exit codes)."""
    return cli.run_main(prog, parser.parse_args, body, argv)


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
