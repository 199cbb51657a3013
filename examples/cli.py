"""Shared CLI conventions of the examples: quiet TensorFlow, one-line errors unless --debug, step messages."""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Errors a user can fix from the message alone: shown without the "rerun with --debug" hint.
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError, PermissionError)


def _is_user_error(exc):
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, _USER_ERRORS) or bool(names & {"ExportError", "ValidationError", "TrainingDiverged",
                                                          "StrategyUnavailable"})


# The project's exit codes: 0 ok, 1 validation / accuracy target missed, 2 bad input or environment, 3 diverged.
EXIT_CODES = {"ValidationError": 1, "AccuracyTargetMissed": 1, "TrainingDiverged": 3}


def exit_code(exc):
    """1 for a missed validation / accuracy target, 3 for diverged training, else 2 (bad input / environment)."""
    return next((EXIT_CODES[cls.__name__] for cls in type(exc).__mro__ if cls.__name__ in EXIT_CODES), 2)


def one_line(exc):
    """The first non-empty line of an exception's message (its type name if it has none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def run_main(prog, parser, body, argv=None):
    """Parses argv with ``parser`` (which must define --debug) and calls ``body(args)`` -> exit code.

    Any exception becomes one line on stderr unless --debug is given; exit code from ``exit_code`` (130 on
    Ctrl-C)."""
    args = parser.parse_args(argv)
    try:
        return int(body(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI contract: one line, traceback only with --debug
        if args.debug:
            raise
        hint = "" if _is_user_error(e) else f" ({type(e).__name__}; rerun with --debug for the traceback)"
        print(f"{prog}: error: {one_line(e)}{hint}", file=sys.stderr)
        return exit_code(e)


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
