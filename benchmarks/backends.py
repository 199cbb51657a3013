"""Forward-pass latency of keras_coatnet models on each Keras 3 backend (TensorFlow, JAX, PyTorch), CPU.

One long-lived process per backend (KERAS_BACKEND is fixed per process) builds each model with random weights
and compiles its predict function the backend's way: TensorFlow `tf.function`, JAX `jax.jit`; PyTorch runs
eager unless `--torch-compile` (`torch.compile` builds C++ kernels: many minutes on 2 loaded cores; eager if it
fails; the table says which). Builds, compiles and warm-up are not timed. The
processes are timed interleaved: each round times `--iters` calls per model on every backend in turn. Reports
the median ms per batch over rounds, by wall clock and by CPU time of the backend's process.

    .venv/bin/python -m benchmarks.backends --rounds 5 --iters 5
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

from benchmarks.peer import PeerSession

BACKENDS = ("tensorflow", "jax", "torch")

_WORKER = '''
import os
import numpy as np
import keras
import keras_coatnet as kc

RUNNERS = {}


def handle(msg):
    if msg["cmd"] == "setup":
        start = time.perf_counter()
        size, batch = msg["size"], msg["batch"]
        model = kc.create_model(msg["model"], input_shape=(size, size, 3), classes=1000)
        x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
        backend = keras.backend.backend()
        compiled = backend == "jax" or (backend == "torch" and msg["torch_compile"])
        mode = {"tensorflow": "tf.function", "jax": "jax.jit", "torch": "torch.compile" if compiled else "eager"}[backend]
        try:
            model.compile(jit_compile=compiled)
            for _ in range(2):
                model.predict_on_batch(x)
        except Exception as e:  # torch.compile needs a working C++ toolchain
            if keras.backend.backend() != "torch":
                raise
            mode = f"eager ({type(e).__name__})"
            model.compile(jit_compile=False)
            for _ in range(2):
                model.predict_on_batch(x)
        RUNNERS[msg["model"]] = lambda: model.predict_on_batch(x)
        return {"mode": mode, "setup_s": time.perf_counter() - start}
    if msg["cmd"] == "time":
        run = RUNNERS[msg["model"]]
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(msg["iters"]):
            run()
        return {"wall_ms": 1e3 * (time.perf_counter() - start) / msg["iters"],
                "cpu_ms": 1e3 * (time.process_time() - cpu) / msg["iters"]}
    raise ValueError(msg)
'''


def cpu_info():
    """The CPU model and its vector/matrix flags, from lscpu."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = [f for f in fields.get("Flags", "").split() if f.startswith(("avx", "amx", "fma"))]
    return f"{fields.get('Model name', '?').strip()}; {os.cpu_count()} CPUs; flags: {' '.join(flags)}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="coatnet_micro,coatnet_0", help="comma-separated registered names")
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--torch-compile", action="store_true", help="torch.compile the PyTorch model (slow to build)")
    p.add_argument("--json", help="also write the results to this file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    models, backends = args.models.split(","), args.backends.split(",")
    print(f"CPU: {cpu_info()}; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    sessions, modes, results = {}, {}, {(b, m): [] for b in backends for m in models}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        for b in backends:
            env = {**os.environ, "KERAS_BACKEND": b, "TF_CPP_MIN_LOG_LEVEL": "2",
                   "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
            sessions[b] = PeerSession(_WORKER, timeout=1800, python=sys.executable, env=env)
            for m in models:
                out = sessions[b].request({"cmd": "setup", "model": m, "size": args.size, "batch": args.batch,
                                          "torch_compile": args.torch_compile})
                modes[b, m] = out["mode"]
                print(f"{b:10s} {m:14s} {out['mode']}: built, compiled and warmed up in {out['setup_s']:.0f} s",
                      flush=True)
        for r in range(args.rounds):
            for m in models:
                for b in backends:
                    results[b, m].append(sessions[b].request({"cmd": "time", "model": m, "iters": args.iters}))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        for s in sessions.values():
            s.close()
    print(f"\nForward, batch {args.batch}, {args.size}x{args.size}, median of {args.rounds} rounds x {args.iters} "
          f"calls (load average {os.getloadavg()[0]:.1f} at end)")
    print("| model | backend | compiled as | ms / batch (wall) | CPU ms / batch |\n|---|---|---|---|---|")
    rows = []
    for m in models:
        for b in backends:
            wall = statistics.median(t["wall_ms"] for t in results[b, m])
            cpu = statistics.median(t["cpu_ms"] for t in results[b, m])
            rows.append({"model": m, "backend": b, "mode": modes[b, m], "wall_ms": wall, "cpu_ms": cpu})
            print(f"| {m} | {b} | {modes[b, m]} | {wall:.1f} | {cpu:.1f} |")
    if args.json:
        from keras_coatnet.atomic import write_text

        write_text(args.json, json.dumps({"cpu": cpu_info(), "args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
