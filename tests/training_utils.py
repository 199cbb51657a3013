"""Helpers for the training tests: tiny configs, image writers, subprocess runner, free ports."""
import io
import json
import os
import socket
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(out_dir, **overrides):
    """digits preset, shrunk to a few short epochs; quiet."""
    cfg = {"preset": "digits", "output_dir": str(out_dir), "epochs": 2, "steps_per_epoch": 4,
           "batch_size": 16, "verbose": 0}
    cfg.update(overrides)
    return cfg


def image_bytes(fmt, seed, size=(20, 24)):
    """Encoded random RGB image (fmt: 'JPEG' or 'PNG')."""
    from PIL import Image

    pixels = np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def write_image_folder(root, per_class=(5, 5), corrupt=()):
    """root/class_i/img_j.{jpg,png} for each class; corrupt: [(class, name, bytes)] written too."""
    for c, n in enumerate(per_class):
        d = os.path.join(root, f"class_{c}")
        os.makedirs(d, exist_ok=True)
        for j in range(n):
            fmt, ext = ("PNG", "png") if j % 2 else ("JPEG", "jpg")
            with open(os.path.join(d, f"img_{j}.{ext}"), "wb") as f:
                f.write(image_bytes(fmt, seed=100 * c + j))
    for c, name, data in corrupt:
        with open(os.path.join(root, f"class_{c}", name), "wb") as f:
            f.write(data)
    return root


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def python_env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def start_python(code, **env):
    """Start `python -c code` in the repo root; returns the Popen (stdout/stderr piped, text)."""
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=python_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    """Wait for proc; return (returncode, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"subprocess timed out after {timeout}s:\n{err[-3000:]}")
    return proc.returncode, out, err


def last_json_line(stdout):
    """The last stdout line that parses as JSON."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise AssertionError(f"no JSON line in output:\n{stdout[-3000:]}")
