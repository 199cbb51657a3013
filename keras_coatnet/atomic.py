"""Atomic writes: a file or folder appears whole under its final name, or not at all (temp name + rename)."""

import contextlib
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
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written for {final}")
        if final.exists() and final.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_bytes(final, data):
    """Writes ``data`` to ``final`` atomically; returns the path."""
    with atomic_path(final) as tmp:
        Path(tmp).write_bytes(data)
    return Path(final)


def write_text(final, text):
    """Writes ``text`` to ``final`` atomically; returns the path."""
    return write_bytes(final, text.encode("utf-8"))
