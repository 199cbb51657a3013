"""CPU training throughput: keras_coatnet CoAtNet-0 vs kecam CoAtNet0 (keras-cv-attention-models 1.4.3).

Both train the same way: 224x224, batch 16, 1000 classes, AdamW (lr 1e-3, weight decay 0.05,
global clipnorm 1.0), categorical cross-entropy with label smoothing 0.1, `train_on_batch` on a
fixed random batch, no XLA unless --jit; precision float32 and mixed (mixed_bfloat16 on CPU).
Ours uses training.optim.make_optimizer (the training CLI's AdamW: no decay on norms, biases and
rel-pos tables). The peer runs in benchmarks/.venv-peer (tf-keras) through benchmarks.peer.

Runs are interleaved: each round times --iters steps of ours, then of the peer, per precision.
Builds, compiles and --warmup steps are not timed. Prints median images/s and ours/peer, by wall
clock and per CPU-second of the training process (steadier on a shared machine).

    .venv/bin/python -m benchmarks.training --rounds 3 --iters 2
"""

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRECISIONS = ("float32", "mixed_bfloat16")

# Runs in our process and, as text, in the peer process (where `keras` is tf-keras).
_STEP_CODE = '''
import time
import numpy as np


def batch(size, classes=1000):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (size, 224, 224, 3)).astype("float32")
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes, size)]
    return x, y


def time_steps(model, x, y, iters):
    """(wall seconds, process CPU seconds) of `iters` train_on_batch calls."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(iters):
        model.train_on_batch(x, y)
    return time.perf_counter() - start, time.process_time() - cpu
'''
exec(_STEP_CODE)

_PEER_SETUP = _STEP_CODE + '''
import tf_keras as keras
from keras_cv_attention_models import coatnet

models = {}


def handle(msg):
    policy = msg["policy"]
    if msg["cmd"] == "build":
        keras.mixed_precision.set_global_policy(policy)
        m = coatnet.CoAtNet0(pretrained=None, input_shape=(224, 224, 3), num_classes=1000)
        keras.mixed_precision.set_global_policy("float32")
        m.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=0.05, global_clipnorm=1.0),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1), jit_compile=msg["jit"])
        x, y = batch(msg["batch"])
        time_steps(m, x, y, msg["warmup"])
        models[policy] = (m, x, y)
        return {"params": int(m.count_params())}
    m, x, y = models[policy]
    wall, cpu = time_steps(m, x, y, msg["iters"])
    return {"wall": wall, "cpu": cpu}
'''


def build_ours(policy, batch_size, warmup, jit):
    """Our CoAtNet-0 compiled like the training CLI; returns (model, x, y) after warm-up steps."""
    import keras

    import keras_coatnet
    from training import config as config_lib
    from training.optim import make_optimizer

    keras.mixed_precision.set_global_policy(policy)
    model = keras_coatnet.create_model("coatnet_0", input_shape=(224, 224, 3), classes=1000)
    keras.mixed_precision.set_global_policy("float32")
    cfg = config_lib.resolve({"weight_decay": 0.05, "clipnorm": 1.0})
    model.compile(optimizer=make_optimizer(model, cfg, 1e-3),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1), jit_compile=jit)
    x, y = batch(batch_size)
    time_steps(model, x, y, warmup)
    return model, x, y


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=2, help="timed steps per model per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--jit", action="store_true", help="XLA-compile both train steps")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    precisions = args.precisions.split(",")

    from benchmarks.peer import PeerSession

    results = {}
    with PeerSession(_PEER_SETUP, timeout=3600) as peer:
        ours = {}
        for policy in precisions:
            print(f"building {policy} (ours, then peer) ...", file=sys.stderr, flush=True)
            ours[policy] = build_ours(policy, args.batch, args.warmup, args.jit)
            peer.request({"cmd": "build", "policy": policy, "batch": args.batch, "warmup": args.warmup,
                          "jit": args.jit})
        times = {(who, pol): [] for who in ("ours", "peer") for pol in precisions}
        for r in range(args.rounds):
            for policy in precisions:
                times["ours", policy].append(time_steps(*ours[policy], args.iters))
                t = peer.request({"cmd": "time", "policy": policy, "iters": args.iters})
                times["peer", policy].append((t["wall"], t["cpu"]))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    images = args.batch * args.iters
    import tensorflow as tf

    from export import runtime
    print(f"{runtime.machine_line()}; TensorFlow {tf.__version__}; load average {os.getloadavg()[0]:.1f}; "
          f"batch {args.batch}, {args.rounds} rounds x {args.iters} steps, medians")
    for policy in precisions:
        row = {}
        for who in ("ours", "peer"):
            row[f"{who}_img_s"] = statistics.median(images / w for w, _ in times[who, policy])
            row[f"{who}_img_per_cpu_s"] = statistics.median(images / c for _, c in times[who, policy])
        row["ratio_wall"] = row["ours_img_s"] / row["peer_img_s"]
        row["ratio_cpu"] = row["ours_img_per_cpu_s"] / row["peer_img_per_cpu_s"]
        results[policy] = row
        print(f"{policy:15s} ours {row['ours_img_s']:6.2f} img/s  peer {row['peer_img_s']:6.2f} img/s  "
              f"ratio {row['ratio_wall']:.2f}x (per CPU-second: {row['ratio_cpu']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": runtime.describe_machine(), "batch": args.batch, "iters": args.iters,
                       "rounds": args.rounds, "jit": args.jit, "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
