"""LiteRT at run time: loading and running a .tflite (`load`, `predict`), which ops XNNPACK took (`op_table`,
`summarize`), latency (`measure`), and the CPU it ran on (`describe_machine`: model name and int8 dot-product
flags). NumPy in, NumPy out; TensorFlow only for the analyzer text."""

import collections
import contextlib
import io
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from export._compat import ops_details


def interpreter_class():
    """The LiteRT ``Interpreter`` class (``tf.lite.Interpreter`` if ai-edge-litert is missing)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the environment
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def load(model, num_threads=1):
    """An allocated interpreter for ``model`` (bytes or a file path), XNNPACK as LiteRT defaults."""
    cls = interpreter_class()
    kw = {"model_content": model} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    it = cls(num_threads=num_threads, **kw)
    it.allocate_tensors()
    return it


def _to_input(x, detail):
    """Casts / quantizes a float array to the dtype of the input tensor ``detail``."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    q = x / scale + zero if scale else x  # scale 0: raw integers (e.g. camera bytes)
    return np.clip(np.round(q), info.min, info.max).astype(dtype)


def _from_output(y, detail):
    """Dequantizes an output array to float32."""
    scale, zero = detail["quantization"]
    if y.dtype != np.float32 and scale:
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


def predict(it, images):
    """Runs ``it`` on each of ``images`` [N, H, W, 3] (float, 0-255 or normalized) one by one -> [N, ...]."""
    inp = it.get_input_details()[0]
    out = it.get_output_details()[0]
    ys = []
    for img in images:
        it.set_tensor(inp["index"], _to_input(np.asarray(img, np.float32)[None], inp))
        it.invoke()
        ys.append(_from_output(it.get_tensor(out["index"]), out)[0])
    return np.stack(ys)


def io_types(it):
    """(input dtype name, output dtype name) of the first input and output."""
    return (np.dtype(it.get_input_details()[0]["dtype"]).name, np.dtype(it.get_output_details()[0]["dtype"]).name)


FLOAT_TYPES = (np.float32, np.float16)


def op_table(model_bytes, it=None):
    """[(op name, input dtypes, output dtypes)] for every op of the model, in execution order.

    ``it``: the model already loaded by ``load`` (else it is loaded here)."""
    it = it or load(model_bytes)
    tensors = {t["index"]: np.dtype(t["dtype"]) for t in it.get_tensor_details()}
    rows = []
    for op in ops_details(it):
        ins = [tensors.get(i) for i in op["inputs"] if i >= 0]
        outs = [tensors.get(i) for i in op["outputs"] if i >= 0]
        rows.append((op["op_name"], ins, outs))
    return rows


def not_delegated(model_bytes, it=None):
    """{op name: count} of the ops LiteRT's default XNNPACK delegate does not take (they run in TFLite's own
    kernels, mostly single-threaded, and split the graph into several XNNPACK partitions).

    LiteRT lists the original nodes next to the DELEGATE nodes that replaced them: a node was taken if it
    lies on a path from a DELEGATE node's input tensors to its output tensors."""
    it = it or load(model_bytes)
    all_ops = ops_details(it)
    ops = [op for op in all_ops if op["op_name"] != "DELEGATE"]
    producer = {t: op for op in ops for t in op["outputs"]}
    taken = set()
    for d in (op for op in all_ops if op["op_name"] == "DELEGATE"):
        boundary, stack = set(d["inputs"]), list(d["outputs"])
        while stack:
            op = producer.get(stack.pop())
            if op is None or op["index"] in taken:
                continue
            taken.add(op["index"])
            stack.extend(t for t in op["inputs"] if t >= 0 and t not in boundary)
    rest = [op["op_name"] for op in ops if op["index"] not in taken]
    return dict(collections.Counter(rest).most_common())


def summarize(model_bytes):
    """{"ops": {name: count}, "float_ops": {name: count}, "flex_ops": [...], "xnnpack_partitions": n,
    "not_delegated": {name: count}}.

    ``float_ops`` counts ops computing in float (a float output), excluding the QUANTIZE/DEQUANTIZE
    boundaries; in a full-integer model those are the ops that fell back to float."""
    it = load(model_bytes)
    rows = op_table(model_bytes, it)
    partitions = sum(name == "DELEGATE" for name, _, _ in rows)  # XNNPACK partitions, listed after the ops
    rows = [r for r in rows if r[0] != "DELEGATE"]
    ops = collections.Counter(name for name, _, _ in rows)
    float_ops = collections.Counter(
        name for name, ins, outs in rows
        if name not in ("QUANTIZE", "DEQUANTIZE") and any(o in FLOAT_TYPES for o in outs))
    flex = sorted({name for name in ops if name.startswith("Flex") or name == "CUSTOM"})
    return {"ops": dict(ops.most_common()), "float_ops": dict(float_ops.most_common()), "flex_ops": flex,
            "xnnpack_partitions": partitions, "not_delegated": not_delegated(model_bytes, it)}


def analyzer_text(model_bytes, gpu_compatibility=True):
    """The text report of ``tf.lite.experimental.Analyzer`` (with GPU delegate compatibility notes)."""
    import tensorflow as tf

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        tf.lite.experimental.Analyzer.analyze(model_content=model_bytes, gpu_compatibility=gpu_compatibility)
    return buf.getvalue()


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
        its = {name: load(m, num_threads=n) for name, m in models.items()}
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


# CPU flags of int8 dot-product instructions (what makes int8 GEMMs fast): x86 and ARM (/proc/cpuinfo names)
DOT_PRODUCT_FLAGS = {"avx_vnni": "AVX-VNNI", "avx512_vnni": "AVX512-VNNI", "amx_int8": "AMX-INT8",
                     "asimddp": "ARM dotprod", "i8mm": "ARM i8mm"}


def _cpuinfo(text):
    """(model name, set of flags) from /proc/cpuinfo text."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "processor") and not model and not value.strip().isdigit():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, flags


def litert_version():
    """The installed ai-edge-litert version (else TensorFlow's, whose tf.lite then runs the models)."""
    for dist in ("ai-edge-litert", "tensorflow"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def describe_machine(cpuinfo_path="/proc/cpuinfo"):
    """{"cpu": model name, "int8_dot_product": [e.g. "AVX512-VNNI"] or [], "litert": version, "cores": n}."""
    path = Path(cpuinfo_path)
    model, flags = _cpuinfo(path.read_text()) if path.exists() else ("", set())
    import os

    return {"cpu": model or platform.processor() or platform.machine(),
            "int8_dot_product": [name for flag, name in DOT_PRODUCT_FLAGS.items() if flag in flags],
            "litert": litert_version(), "cores": os.cpu_count()}


def machine_line(info=None):
    """One line for a table header: 'CPU ... (2 cores), int8 dot products: ..., LiteRT ...'."""
    info = info or describe_machine()
    dots = ", ".join(info["int8_dot_product"]) or "none"
    return f"CPU {info['cpu']} ({info['cores']} cores), int8 dot products: {dots}; {info['litert']}"
