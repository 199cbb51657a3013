"""Downloads one file into a cache the way `keras.utils.get_file` does: atomically, checked before it is kept.

The bytes go to a hidden temporary file in the destination folder, are counted against the server's
Content-Length and hashed (SHA-256) while streaming, then checked (`sha256`, then a `validate` callback); only a
file that passes every check is renamed onto its final path, so an interrupted, truncated or corrupt download
never appears under the final name and is always removed.
"""

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request

CHUNK = 1 << 20


class DownloadError(OSError):
    """The file could not be fetched (offline, HTTP error, connection lost before the end)."""


def cache_root():
    """`$KERAS_HOME` if set, else `~/.keras` (falling back to a temporary folder if that is not writable)."""
    root = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    if not os.access(root if os.path.isdir(root) else os.path.dirname(root), os.W_OK):
        root = os.path.join(tempfile.gettempdir(), ".keras")
    return root


def sha256_of(path):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stream(response, out, total, progress):
    """Copies `response` into `out`; returns (bytes written, sha256 hex)."""
    digest, done = hashlib.sha256(), 0
    bar = None
    if progress and total:
        from keras.utils import Progbar

        bar = Progbar(total, unit_name="B")
    while True:
        chunk = response.read(CHUNK)
        if not chunk:
            break
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if bar is not None:
            bar.update(min(done, total))
    return done, digest.hexdigest()


def download(url, dest, sha256=None, validate=None, timeout=60.0, progress=True):
    """Fetches `url` (http(s):// or file://) to the path `dest` and returns `dest`.

    sha256: expected hex digest, or None. validate: callable(path) that raises ValueError on a bad file.
    Raises DownloadError when the bytes cannot be fetched in full, ValueError when they fail a check; in
    both cases nothing is left at `dest` or in its folder."""
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(dest)}.", suffix=".part")
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                done, digest = _stream(response, out, total, progress)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError):
                reason = f"HTTP {e.code} {e.reason}"
            else:
                reason = f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"
            raise DownloadError(f"Could not download {url}: {reason}") from e
        if total is not None and done != total:
            raise DownloadError(f"Could not download {url}: the connection ended after {done} of {total} bytes.")
        if sha256 is not None and digest != sha256.lower():
            raise ValueError(f"Checksum mismatch for {url}: SHA-256 {digest}, expected {sha256}. The download "
                             "is corrupt or the file was replaced upstream; it was not kept.")
        if validate is not None:
            validate(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache file is readable like any download
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
