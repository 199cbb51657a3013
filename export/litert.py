"""Run .tflite models with LiteRT (ai-edge-litert), falling back to tf.lite.Interpreter."""

import numpy as np


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
