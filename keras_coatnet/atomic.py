"""Atomic writes: a file or folder appears whole under its final name, or not at all (temp name + rename)."""

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final):
    """Yields a temporary path next to ``final``; moves it to ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp = tmp_dir / final.name
    try:
        try:
            yield tmp
        except Exception as e:
            code = disk_full_errno(e)
            if code is None:
                raise
            raise OSError(code, os.strerror(code), str(final)) from e
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written for {final}")
        replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


DISK_FULL = {errno.ENOSPC: "No space left on device", errno.EFBIG: "File too large",
             errno.EDQUOT: "Disk quota exceeded"}


def disk_full_errno(exc):
    """The errno (ENOSPC, EFBIG, EDQUOT) of a write that failed for want of space, from an OSError or from the
    text of another library's error (TensorFlow's SaveV2 says "...; File too large"); else None."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return exc.errno
    return next((code for code, text in DISK_FULL.items() if text in str(exc)), None)


def replace(src, final):
    """Moves file or folder ``src`` to ``final`` (same file system), replacing what is there."""
    final = Path(final)
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(src, final)


def remove(path):
    """Removes a file or folder if it exists; returns whether something was removed."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return True
    if path.exists() or path.is_symlink():
        path.unlink()
        return True
    return False


def writable_folder(path):
    """Creates folder ``path`` if needed and checks a file can be created in it; returns it as a Path.

    Raises NotADirectoryError / PermissionError / OSError with a one-line message naming the problem."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == path else f"is under {p}, which is a file"
                raise NotADirectoryError(f"output folder {path} {where}")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise type(e)(f"cannot write to output folder {path}: {e.strerror or e}") from None
    return path


def write_bytes(final, data):
    """Writes ``data`` to ``final`` atomically; returns the path."""
    with atomic_path(final) as tmp:
        Path(tmp).write_bytes(data)
    return Path(final)


def write_text(final, text):
    """Writes ``text`` to ``final`` atomically; returns the path."""
    return write_bytes(final, text.encode("utf-8"))


@contextlib.contextmanager
def exit_on_sigterm():
    """Within the block, SIGTERM raises SystemExit(143) (as Ctrl-C raises KeyboardInterrupt), so ``finally`` and
    ``with`` clean-ups (temporary files and folders) run. Does nothing outside the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    received = []

    def handler(signum, frame):
        received.append(signum)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except BaseException:
        if received:  # a library that called back into Python (TensorFlow) may have wrapped the SystemExit
            raise SystemExit(128 + received[0]) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
