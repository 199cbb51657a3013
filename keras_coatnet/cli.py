"""The project's one command-line runner (export, training, convert, examples; no TensorFlow import):
one-line errors unless --debug, and the same exit codes everywhere.

Exit codes: 0 ok, 1 a validation or accuracy target missed, 2 bad input or environment, 3 diverged training,
130 interrupted (Ctrl-C). An exception class says its code with an ``exit_code`` attribute (export's
ValidationError 1, training's TrainingDiverged 3); anything else is 2.
"""

import errno
import os
import re
import sys
import tempfile

BAD_INPUT = 2
INTERRUPTED = 130


def exit_code(exc):
    """The exit code for exception ``exc`` (its class's ``exit_code``, else BAD_INPUT)."""
    return int(getattr(exc, "exit_code", BAD_INPUT))


def _is_user_error(exc):
    """An error the user can fix from its message alone (no "rerun with --debug" hint)."""
    return isinstance(exc, (ValueError, OSError)) or hasattr(exc, "exit_code")


SCRATCH_PREFIX = "coatnet_export_"  # a command's scratch folder in the system's temporary directory
DISK_FULL = ("No space left on device", "File too large", "Disk quota exceeded")
_PATH = re.compile(r"(/[^\s;,'\"]+)")


def disk_full(exc):
    """'cannot write PATH: CAUSE' for a write that failed for want of space (an OSError's errno, or the text
    of another library's error, e.g. TensorFlow's SaveV2), else None."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        where, cause = exc.filename, os.strerror(exc.errno)
    else:
        where, cause = None, next((c for c in DISK_FULL if c in str(exc)), None)
        if cause is None:
            return None
    chain, e = [], exc  # the file is named by the error or by the one it was raised from (h5py's, TF's)
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if where:
            break
        text = str(e)
        paths = _PATH.findall(text[:text.index(cause)] if cause in text else text)
        where = paths[-1] if paths else None
    where = where or "a file"
    hint = ""
    if f"{os.sep}{SCRATCH_PREFIX}" in str(where):
        hint = f" (a temporary file: free space in {tempfile.gettempdir()} or point TMPDIR at a larger disk)"
    return f"cannot write {where}: {cause}{hint}"


LIBRARIES = {"tensorflow": "TensorFlow", "tensorflow_core": "TensorFlow", "ai_edge_litert": "LiteRT",
             "tflite_runtime": "LiteRT", "h5py": "h5py", "safetensors": "safetensors"}
_TF_DECORATION = re.compile(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]|\bname: *$")


def raised_in_library(exc):
    """The LIBRARIES name of the package that raised ``exc`` (its class's module or its innermost frame's),
    else None. Errors the project raises itself (with ``exit_code``) are never a library's."""
    if hasattr(exc, "exit_code"):
        return None
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    modules = [type(exc).__module__, tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""]
    return next((LIBRARIES[m.split(".")[0]] for m in modules if m.split(".")[0] in LIBRARIES), None)


def _gist(exc, width=160):
    """The first line of ``exc`` without TensorFlow's {{function_node ...}} / [Op:...] decorations, at most
    ``width`` characters."""
    lines = [line for line in (" ".join(_TF_DECORATION.sub(" ", l).split()) for l in str(exc).splitlines()) if line]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= width else text[:width - 3] + "..."


def message(exc):
    """One line for ``exc``: a full disk's file and cause (``disk_full``); for an error raised inside TensorFlow,
    LiteRT, h5py or safetensors (``raised_in_library``), the library's name and the gist of its first line
    (``_gist``), its type and the --debug hint; a user error's whole message on one line; another error's first
    line, its type and the --debug hint."""
    full = disk_full(exc)
    if full is not None:
        return full
    library = raised_in_library(exc)
    if library is not None:
        return f"{library} failed: {_gist(exc)} ({type(exc).__name__}; rerun with --debug for the traceback)"
    if _is_user_error(exc):
        return " ".join(str(exc).split()) or type(exc).__name__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{lines[0] if lines else type(exc).__name__} ({type(exc).__name__}; rerun with --debug for the traceback)"


def run_main(prog, parse, body, argv=None):
    """``body(parse(argv))`` -> exit code (None is 0); ``argv`` defaults to sys.argv[1:]. Errors print
    ``PROG: error: ...`` (``PROG: LABEL: ...`` for an exception class with a ``cli_label``) on stderr, or raise
    when argv has --debug."""
    debug = "--debug" in (sys.argv[1:] if argv is None else list(argv))
    try:
        return int(body(parse(argv)) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the CLI contract: one line, traceback only with --debug
        if debug:
            raise
        print(f"{prog}: {getattr(e, 'cli_label', 'error')}: {message(e)}", file=sys.stderr)
        return exit_code(e)
