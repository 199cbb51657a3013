"""LiteRT latency of .tflite files: median of interleaved runs after warm-up, one process."""

import time

import numpy as np

from export import litert


def _random_input(detail, rng):
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.randint(info.min, info.max + 1, detail["shape"]).astype(dtype)
    return rng.uniform(0, 255, detail["shape"]).astype(dtype)


def measure(models, threads=(1, 2), runs=10, warmup=2, progress=None):
    """{name: {threads: median ms}} for ``models`` {name: path or bytes}.

    Each round runs every model once (interleaved), so slow drifts of a shared machine hit all alike."""
    rng = np.random.RandomState(0)
    out = {name: {} for name in models}
    for n in threads:
        its = {name: litert.load(m, num_threads=n) for name, m in models.items()}
        feeds = {name: _random_input(it.get_input_details()[0], rng) for name, it in its.items()}
        times = {name: [] for name in models}
        for r in range(warmup + runs):
            for name, it in its.items():
                it.set_tensor(it.get_input_details()[0]["index"], feeds[name])
                t0 = time.perf_counter()
                it.invoke()
                if r >= warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)
            if progress:
                progress(f"[bench] {n} thread(s): round {r + 1}/{warmup + runs}")
        for name in models:
            out[name][n] = float(np.median(times[name]))
        del its
    return out
