"""What a .tflite graph is made of: op histogram, ops left in float in a quantized model, Flex ops."""

import collections
import contextlib
import io

import numpy as np

from export import litert
from export._compat import ops_details

FLOAT_TYPES = (np.float32, np.float16)


def op_table(model_bytes, it=None):
    """[(op name, input dtypes, output dtypes)] for every op of the model, in execution order.

    ``it``: the model already loaded by ``litert.load`` (else it is loaded here)."""
    it = it or litert.load(model_bytes)
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
    it = it or litert.load(model_bytes)
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
    it = litert.load(model_bytes)
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
