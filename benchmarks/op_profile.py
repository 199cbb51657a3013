"""Where CoAtNet-0 spends its CPU inference time: TF profiler op times, ours and the peer's.

Runs the model's forward pass as a ``tf.function`` (graph mode, as benchmarks/inference.py)
under ``tf.profiler``, reads the trace (xplane.pb) and sums op durations by op type and by
layer (the name scope).  Op durations summed over threads are CPU time, not wall time.

    .venv/bin/python -m benchmarks.op_profile --batch 8 --steps 3 [--peer] [--top 25]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Runs in our process and, as text, in the peer process.
_PROFILE_CODE = '''
import collections
import glob
import re
import shutil
import time

import numpy as np
import tensorflow as tf


def _group(scope, block_re):
    """(block, part) from an op's name scope, e.g. ('stages__2__blocks__0', 'attn/rel_pos')."""
    parts = [re.sub(r"_\\d+$", "", p) for p in scope.split("/")[1:]]  # drop the model name
    for i, p in enumerate(parts):
        m = re.match(block_re, p)
        if m:
            rest = [m.group(2)] if m.group(2) else []
            return m.group(1), "/".join((rest + parts[i + 1:])[:2]) or "-"
    return (parts[0] if parts else "-"), "-"


def profile_model(model, batch, steps, block_re, train=False, logdir="/tmp/op_profile_trace"):
    """{"wall_ms": per step, "by_type", "by_block", "by_part": {name: CPU ms per step}}.

    A step is the forward pass, or with `train` the forward pass in training mode and the gradients of a
    cross-entropy loss with respect to the trainable weights (no optimizer update)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)), tf.float32)
    y = tf.constant(np.random.default_rng(1).integers(0, 1000, batch), tf.int32)

    def train_step(t):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(t, training=True), tf.float32)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        grads = tape.gradient(loss, model.trainable_weights)
        return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in grads])  # needs every gradient

    fn = tf.function(train_step if train else (lambda t: model(t, training=False)))
    for _ in range(2):
        fn(x).numpy()
    shutil.rmtree(logdir, ignore_errors=True)
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(steps):
        fn(x).numpy()
    wall = (time.perf_counter() - start) / steps
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    path = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]
    space.ParseFromString(open(path, "rb").read())
    by_type, by_block, by_part = (collections.Counter() for _ in range(3))
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for ev in line.events:
                name = plane.event_metadata[ev.metadata_id].name
                if ":" not in name or "/" not in name:
                    continue
                scope, op = name.rsplit(":", 1)
                ms = ev.duration_ps / 1e9 / steps
                block, part = _group(scope.rsplit("/", 1)[0], block_re)
                by_type[op] += ms
                by_block[block] += ms
                by_part[f"{block}/{part}"] += ms
    return {"wall_ms": wall * 1e3, "by_type": dict(by_type), "by_block": dict(by_block),
            "by_part": dict(by_part)}
'''

# Our blocks are scopes "stages__2__blocks__0" ("stages.2.blocks.0" before); kecam's are name prefixes "stack_3_block_1_mhsa_...".
OURS_BLOCK_RE = r"(stem|stages(?:\.|__)\d+(?:\.|__)blocks(?:\.|__)\d+|norm|head\S*)()$"
PEER_BLOCK_RE = r"(stem|stack_\d+_block_\d+)_?(.*)$"

_PEER_CODE = _PROFILE_CODE + '''
from keras_cv_attention_models import coatnet
model = coatnet.CoAtNet0(pretrained=None, input_shape=(224, 224, 3), classifier_activation=None)
emit(profile_model(model, BATCH, STEPS, PEER_BLOCK_RE, TRAIN))
'''


def print_profile(title, prof, top):
    """Top entries of each breakdown, as ms per step and share of the summed op time."""
    total = sum(prof["by_type"].values())
    print(f"\n== {title}: wall {prof['wall_ms']:.0f} ms/step, summed op time {total:.0f} ms/step")
    for key in ("by_type", "by_block", "by_part"):
        print(f"-- {key}")
        for name, ms in sorted(prof[key].items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {ms:9.1f} ms  {100 * ms / total:5.1f}%  {name}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="profiled steps")
    p.add_argument("--train", action="store_true", help="profile forward + gradients in training mode")
    p.add_argument("--top", type=int, default=20, help="rows per breakdown")
    p.add_argument("--peer", action="store_true", help="also profile kecam CoAtNet0")
    args = p.parse_args(argv)

    exec(_PROFILE_CODE, globals())
    import keras_coatnet
    model = keras_coatnet.CoAtNet0(weights=None, classifier_activation=None)
    what = f"{'train step' if args.train else 'forward'}, batch {args.batch}"
    print_profile(f"ours, {what}", profile_model(model, args.batch, args.steps, OURS_BLOCK_RE, args.train),
                  args.top)
    if args.peer:
        from benchmarks.peer import run_peer
        code = (f"BATCH, STEPS, PEER_BLOCK_RE, TRAIN = {args.batch}, {args.steps}, {PEER_BLOCK_RE!r}, {args.train}\n"
                + _PEER_CODE)
        print_profile(f"peer (kecam), {what}", run_peer(code, timeout=1800), args.top)


if __name__ == "__main__":
    sys.exit(main())
