"""Run code in the peer environment (keras-cv-attention-models on tf-keras).

The peer, keras-cv-attention-models ("kecam"), needs Keras 2 (tf-keras), which
cannot share a process with our Keras 3.  It lives in its own virtualenv,
``benchmarks/.venv-peer``, and is driven through subprocesses.

Stable API (used by benchmarks/inference.py, benchmarks/training.py, export/):

- ``ensure_peer_venv() -> Path``: create/install the peer venv if missing,
  return its python executable.
- ``run_peer(code, timeout=600) -> dict``: run a snippet once in the peer venv
  and return the JSON object it passed to ``emit(obj)``.
- ``PeerSession(setup_code, handler="handle")``: a long-lived peer process.
  ``setup_code`` is run once (build models there) and must define
  ``handle(msg: dict) -> dict``; ``session.request(msg) -> dict`` sends one
  message and waits for the reply.  Use as a context manager.

Inside peer code, ``emit``, ``json``, ``sys`` and ``time`` are predefined and
``TF_USE_LEGACY_KERAS=1`` is set, so ``import tensorflow as tf; tf.keras`` is
tf-keras and ``from keras_cv_attention_models import coatnet`` works.  Weights
cannot be downloaded here: always pass ``pretrained=None``.

Example::

    from benchmarks.peer import run_peer
    out = run_peer('''
    from keras_cv_attention_models import coatnet
    m = coatnet.CoAtNet0(pretrained=None, input_shape=(224, 224, 3))
    emit({"params": int(m.count_params())})
    ''')
    out["params"]  # 25 million and some
"""

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

PEER_VENV = Path(__file__).resolve().parent / ".venv-peer"
PEER_PYTHON = PEER_VENV / "bin" / "python"
PEER_PACKAGES = (
    "tensorflow==2.21.*",
    "tf-keras==2.21.*",
    "keras-cv-attention-models==1.4.3",
)
MARKER = "@@PEER@@ "

_PRELUDE = f"""
import json, sys, time
def emit(obj):
    sys.stdout.write({MARKER!r} + json.dumps(obj) + "\\n")
    sys.stdout.flush()
"""

_SERVER = """
for _line in sys.stdin:
    if not _line.strip():
        continue
    _msg = json.loads(_line)
    if _msg.get("cmd") == "exit":
        break
    try:
        emit({"ok": True, "result": handle(_msg)})
    except Exception as _e:
        emit({"ok": False, "error": f"{type(_e).__name__}: {_e}"})
"""


def peer_env():
    """Environment for peer subprocesses (legacy Keras, quiet TF logs)."""
    env = dict(os.environ)
    env.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONUNBUFFERED="1")
    env.pop("KERAS_BACKEND", None)
    env.pop("PYTHONPATH", None)
    return env


def ensure_peer_venv(quiet=False):
    """Create ``benchmarks/.venv-peer`` with PEER_PACKAGES if missing; return its python."""
    if PEER_PYTHON.exists():
        return PEER_PYTHON
    log = subprocess.DEVNULL if quiet else None
    print(f"creating peer venv {PEER_VENV} (a few minutes)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(PEER_PYTHON), "-m", "pip", "install", "-q", *PEER_PACKAGES],
                   check=True, stdout=log)
    return PEER_PYTHON


def _parse_emitted(stdout):
    """All objects emitted (marker lines) in ``stdout``."""
    return [json.loads(line[len(MARKER):]) for line in stdout.splitlines()
            if line.startswith(MARKER)]


def run_peer(code, timeout=600):
    """Run ``code`` once in the peer venv; return the last object it ``emit``-ted.

    Raises RuntimeError (with the stderr tail) if the snippet fails or emits nothing,
    subprocess.TimeoutExpired after ``timeout`` seconds.
    """
    python = ensure_peer_venv()
    script = _PRELUDE + textwrap.dedent(code)
    proc = subprocess.run([str(python), "-c", script], env=peer_env(), timeout=timeout,
                          capture_output=True, text=True)
    emitted = _parse_emitted(proc.stdout)
    if proc.returncode != 0 or not emitted:
        raise RuntimeError(f"peer snippet failed (rc={proc.returncode}, "
                           f"{len(emitted)} objects emitted):\n{proc.stderr[-3000:]}")
    return emitted[-1]


class PeerSession:
    """A long-lived peer process answering JSON requests (one line each way).

    ``setup_code`` runs once and must define ``handle(msg: dict) -> dict``.
    ``request(msg, timeout)`` returns handle's result; it raises RuntimeError if the
    handler fails or the process dies, TimeoutError after ``timeout`` seconds.
    """

    def __init__(self, setup_code, timeout=600, python=None, env=None):
        """``python``/``env``: another interpreter and environment (default: the peer venv's)."""
        python = python or ensure_peer_venv()
        self.timeout = timeout
        script = _PRELUDE + textwrap.dedent(setup_code) + _SERVER
        self.proc = subprocess.Popen([str(python), "-c", script], env=env or peer_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self._replies = queue.Queue()
        self._stderr_tail = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for line in self.proc.stdout:  # lines without the marker are the peer's own prints
            if line.startswith(MARKER):
                self._replies.put(json.loads(line[len(MARKER):]))
        self._replies.put(None)

    def _read_stderr(self):
        for line in self.proc.stderr:
            self._stderr_tail = (self._stderr_tail + [line])[-60:]

    def request(self, msg, timeout=None):
        """Send ``msg`` (a JSON-able dict) and return the peer's reply dict."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"peer process exited:\n{''.join(self._stderr_tail)}")
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        try:
            reply = self._replies.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise TimeoutError(f"peer gave no reply to {msg} in {timeout or self.timeout} s")
        if reply is None:
            self.proc.wait()
            raise RuntimeError(f"peer process exited (rc={self.proc.returncode}):\n"
                               f"{''.join(self._stderr_tail)}")
        if not reply["ok"]:
            raise RuntimeError(f"peer handler failed: {reply['error']}")
        return reply["result"]

    def close(self):
        """Ask the peer to exit; kill it if it does not within 30 s."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
