"""CPU inference throughput: keras_coatnet CoAtNet-0 vs kecam CoAtNet0 vs ConvNeXtTiny.

All three models run at 224x224 with random weights, compiled the same way
(``--mode``), and are measured interleaved: each round times ``--iters`` calls of
ours, then the peer (kecam, in a long-lived tf-keras subprocess), then ConvNeXtTiny.
Builds, compiles and warm-up calls are not timed.  Reports the median images/s
over rounds and the ratios ours/peer and ours/convnext, by wall clock and per
CPU-second used by the model's process (the latter is steadier on a loaded machine).

    .venv/bin/python -m benchmarks.inference --rounds 5 --iters 5 --batch-sizes 1,8
"""

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODES = ("graph", "xla", "predict")

# Runs in our process and, as text, in the peer process (tf.keras there is tf-keras).
_TIMING_CODE = '''
import time
import numpy as np
import tensorflow as tf


def make_runner(model, mode, batch):
    """A no-argument callable running one forward pass of ``model`` on a fixed batch."""
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)),
                    tf.float32)
    if mode == "predict":
        model.jit_compile = True
        return lambda: model.predict_on_batch(x)
    fn = tf.function(lambda t: model(t, training=False), jit_compile=(mode == "xla"))
    return lambda: fn(x).numpy()


def time_runner(run, iters):
    """(wall seconds, process CPU seconds) taken by ``iters`` back-to-back calls."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(iters):
        run()
    return time.perf_counter() - start, time.process_time() - cpu_start
'''
exec(_TIMING_CODE)

_PEER_SETUP = _TIMING_CODE + '''
from keras_cv_attention_models import coatnet

RUNNERS = {}


def handle(msg):
    if msg["cmd"] == "setup":
        start = time.perf_counter()
        model = coatnet.CoAtNet0(pretrained=None, input_shape=(224, 224, 3))
        for batch in msg["batch_sizes"]:
            RUNNERS[batch] = make_runner(model, msg["mode"], batch)
            time_runner(RUNNERS[batch], msg["warmup"])
        return {"params": int(model.count_params()),
                "setup_s": time.perf_counter() - start}
    if msg["cmd"] == "time":
        return {"seconds": time_runner(RUNNERS[msg["batch"]], msg["iters"])}  # [wall, cpu]
    raise ValueError(f"unknown cmd {msg['cmd']!r}")
'''


class LocalModel:
    """One of our-venv models, prepared for timing at several batch sizes."""

    def __init__(self, model, mode, batch_sizes, warmup):
        self.params = int(model.count_params())
        self.runners = {}
        for batch in batch_sizes:
            self.runners[batch] = make_runner(model, mode, batch)
            time_runner(self.runners[batch], warmup)

    def time(self, batch, iters):
        return time_runner(self.runners[batch], iters)


class PeerModel:
    """kecam CoAtNet0 in a long-lived peer process (see benchmarks/peer.py)."""

    def __init__(self, session, mode, batch_sizes, warmup):
        self.session = session
        info = session.request({"cmd": "setup", "mode": mode, "warmup": warmup,
                                "batch_sizes": list(batch_sizes)}, timeout=1800)
        self.params = info["params"]

    def time(self, batch, iters):
        return tuple(self.session.request({"cmd": "time", "batch": batch, "iters": iters})["seconds"])


def build_ours(stand_in):
    """Our CoAtNet-0 (or ConvNeXtTiny standing in for it, to test the harness)."""
    import keras
    if stand_in:
        return keras.applications.ConvNeXtTiny(weights=None)
    import keras_coatnet
    return keras_coatnet.CoAtNet0(weights=None)


def load_average():
    """1-minute load average (other jobs on the machine make numbers noisy)."""
    return round(os.getloadavg()[0], 2)


def run_benchmark(args):
    """Return {"results": {model: {batch: [img/s per round]}}, ...} measured interleaved."""
    import keras

    from benchmarks.peer import PeerSession

    batch_sizes = args.batch_sizes
    print(f"building peer (kecam CoAtNet0, mode={args.mode}) ...", file=sys.stderr)
    session = PeerSession(_PEER_SETUP)
    try:
        models = {}
        models["peer"] = PeerModel(session, args.mode, batch_sizes, args.warmup)
        print("building ours ...", file=sys.stderr)
        models["ours"] = LocalModel(build_ours(args.stand_in), args.mode, batch_sizes,
                                    args.warmup)
        if not args.no_convnext:
            print("building convnext ...", file=sys.stderr)
            models["convnext"] = LocalModel(keras.applications.ConvNeXtTiny(weights=None),
                                            args.mode, batch_sizes, args.warmup)
        order = [name for name in ("ours", "peer", "convnext") if name in models]
        results = {name: {b: [] for b in batch_sizes} for name in order}
        cpu_results = {name: {b: [] for b in batch_sizes} for name in order}
        loads = [load_average()]
        for r in range(args.rounds):
            for batch in batch_sizes:
                for name in order:
                    wall, cpu = models[name].time(batch, args.iters)
                    results[name][batch].append(batch * args.iters / wall)
                    cpu_results[name][batch].append(batch * args.iters / cpu)
            loads.append(load_average())
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n}@{b}={results[n][b][-1]:.2f}" for b in batch_sizes for n in order)
                + f" img/s (load {loads[-1]})", file=sys.stderr)
    finally:
        session.close()
    return {"mode": args.mode, "rounds": args.rounds, "iters": args.iters,
            "stand_in": args.stand_in, "cpus": os.cpu_count(), "load": loads,
            "params": {n: m.params for n, m in models.items()},
            "results": results, "cpu_results": cpu_results}


def summarize(report, key="results"):
    """Median images/s per model and batch, and ratios of ours to the others."""
    res = report[key]
    med = {n: {b: statistics.median(v) for b, v in per.items()} for n, per in res.items()}
    ratios = {f"ours/{n}": {b: med["ours"][b] / med[n][b] for b in med[n]}
              for n in med if n != "ours"}
    return med, ratios


def print_table(med, ratios, unit="img/s"):
    """Markdown table: one row per batch size."""
    names = list(med)
    cols = [f"{n} {unit}" for n in names] + list(ratios)
    print("| batch | " + " | ".join(cols) + " |")
    print("|---:|" + "---:|" * len(cols))
    for b in next(iter(med.values())):
        cells = [f"{med[n][b]:.2f}" for n in names] + [f"{ratios[k][b]:.2f}x" for k in ratios]
        print(f"| {b} | " + " | ".join(cells) + " |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--iters", type=int, default=5, help="timed calls per round (default 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls after build")
    p.add_argument("--batch-sizes", default="1,8",
                   type=lambda s: [int(v) for v in s.split(",")], help="e.g. 1,8")
    p.add_argument("--mode", choices=MODES, default="graph",
                   help="graph (default): tf.function without XLA (fastest on CPU); xla: "
                        "tf.function(jit_compile=True); predict: predict_on_batch with "
                        "model.jit_compile=True")
    p.add_argument("--no-convnext", action="store_true", help="skip ConvNeXtTiny")
    p.add_argument("--stand-in", action="store_true",
                   help="use ConvNeXtTiny as 'ours' (to test the harness)")
    p.add_argument("--json", metavar="OUT", help="also write raw results to OUT")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    report = run_benchmark(args)
    from export import runtime
    report["machine"] = runtime.describe_machine()
    print(runtime.machine_line(report["machine"]))
    print(f"mode={report['mode']}  rounds={report['rounds']}  iters={report['iters']}  "
          f"cpus={report['cpus']}  load={report['load']}"
          + ("  (STAND-IN: ours is ConvNeXtTiny)" if report["stand_in"] else ""))
    med, ratios = summarize(report)
    report["median"], report["ratios"] = med, ratios
    print("\nwall clock (median images/s):")
    print_table(med, ratios)
    med, ratios = summarize(report, "cpu_results")
    report["cpu_median"], report["cpu_ratios"] = med, ratios
    print("\nper CPU-second of the model's process (less sensitive to other load):")
    print_table(med, ratios, "img/CPU-s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
