"""Loads timm CoAtNet `state_dict`s (PyTorch layouts) into our Keras models, strictly.

Our layer names are timm's module paths (spelled without dots, see `naming`), so a Keras variable's timm key is
its owning layer's path (names mapped back by `naming.timm_path` and joined with '.') plus the PyTorch parameter
name. Layouts: conv OIHW -> HWIO, depthwise [C, 1, kh, kw] ->
[kh, kw, C, 1], linear [out, in] -> [in, out]. Relative position bias tables trained at another resolution
are resized as timm does (see `resize_bias_table`).
"""

import logging
import os

import numpy as np
from keras import layers

from keras_coatnet import _compat
from keras_coatnet.layers import LayerScale, RelativePositionBias
from keras_coatnet.layers.table_resize import resize_grid
from keras_coatnet.naming import timm_path

log = logging.getLogger("keras_coatnet")

STEM_CONV = "stem.conv1.weight"  # the first conv, adapted to the input's channels
IGNORED_SUFFIXES = ("num_batches_tracked", "relative_position_index", "rel_coords_log", "height_lookup",
                    "width_lookup")

_RENAME = {
    layers.BatchNormalization: {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                                "moving_variance": "running_var"},
    layers.LayerNormalization: {"gamma": "weight", "beta": "bias"},
    layers.DepthwiseConv2D: {"kernel": "weight", "bias": "bias"},
    layers.Conv2D: {"kernel": "weight", "bias": "bias"},
    layers.Dense: {"kernel": "weight", "bias": "bias"},
    RelativePositionBias: {"relative_position_bias_table": "relative_position_bias_table"},
    LayerScale: {"gamma": "gamma"},
}


def read_safetensors(path):
    """Reads a `.safetensors` file into {key: float32 ndarray}. Raises FileNotFoundError / ValueError."""
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file not found: {path}")
    try:
        tensors = load_file(path)
    except Exception as e:  # SafetensorError, and Rust-side errors for some damaged files
        raise ValueError(f"{path} is truncated or corrupt (not a readable safetensors file: {e}); download or "
                         "copy it again.") from e
    return {k: np.asarray(v, dtype=np.float32) if v.dtype.kind == "f" else v for k, v in tensors.items()}


def _walk(layer, path):
    yield path, layer
    for sub in _compat.sublayers(layer):
        yield from _walk(sub, f"{path}.{timm_path(sub.name)}")


def _own_variables(layer):
    sub_ids = {id(v) for sub in _compat.sublayers(layer, recursive=True) for v in sub.weights}
    return [v for v in layer.weights if id(v) not in sub_ids]


def variable_map(model):
    """{timm key: (keras variable, owning layer)} for every weight of `model`."""
    out = {}
    for top in model.layers:
        for path, layer in _walk(top, timm_path(top.name)):
            own = _own_variables(layer)
            if not own:
                continue
            rename = next((r for cls, r in _RENAME.items() if isinstance(layer, cls)), None)
            if rename is None:
                raise TypeError(f"No timm mapping for layer {path} ({type(layer).__name__}).")
            for v in own:
                name = v.name.split("/")[-1]
                out[f"{path}.{rename[name]}"] = (v, layer)
    return out


def to_keras_layout(tensor, variable, layer):
    """Converts one PyTorch tensor to the layout of the Keras `variable` of `layer`."""
    t = np.asarray(tensor)
    name = variable.name.split("/")[-1]
    if name == "kernel" and isinstance(layer, layers.DepthwiseConv2D) and t.ndim == 4:
        return t.transpose(2, 3, 0, 1)
    if name == "kernel" and isinstance(layer, layers.Conv2D) and t.ndim == 4:
        return t.transpose(2, 3, 1, 0)
    if name == "kernel" and isinstance(layer, (layers.Dense, layers.Conv2D)):
        t = t.reshape(t.shape[0], -1).T  # linear [out, in] (or a 1x1 conv) -> [in, out]
        return t.reshape(variable.shape)
    return t


def to_timm_layout(value, variable, layer):
    """The inverse of `to_keras_layout`: one Keras variable's value -> its PyTorch layout (conv HWIO -> OIHW,
    depthwise [kh, kw, C, 1] -> [C, 1, kh, kw], dense [in, out] -> [out, in])."""
    t = np.asarray(value)
    name = variable.name.split("/")[-1]
    if name == "kernel" and isinstance(layer, layers.DepthwiseConv2D):
        return t.transpose(2, 3, 0, 1)
    if name == "kernel" and isinstance(layer, layers.Conv2D):
        return t.transpose(3, 2, 0, 1)
    if name == "kernel" and isinstance(layer, layers.Dense):
        return t.T
    return t


def timm_state_dict(model):
    """{timm key: float32 ndarray in PyTorch layout} of a Keras CoAtNet, with timm's BatchNorm
    `num_batches_tracked` counters (int64 zeros), as timm's own state_dict has them."""
    out = {}
    for key, (variable, layer) in variable_map(model).items():
        out[key] = np.ascontiguousarray(to_timm_layout(variable.numpy(), variable, layer), dtype=np.float32)
        if isinstance(layer, layers.BatchNormalization) and key.endswith(".running_var"):
            out[key[: -len("running_var")] + "num_batches_tracked"] = np.zeros([], np.int64)
    return out


def adapt_input_conv(kernel, in_chans):
    """timm's `adapt_input_conv` on a Keras conv kernel [kh, kw, 3, out] trained on RGB: 1 channel takes the
    sum over RGB; C > 3 (or 2) repeats RGB and keeps the first C, scaled by 3 / C. -> [kh, kw, C, out]."""
    if kernel.shape[2] != 3:
        raise ValueError(f"Can only adapt a 3-channel first conv to {in_chans} channels; the checkpoint's has "
                         f"{kernel.shape[2]}.")
    if in_chans == 1:
        return kernel.sum(axis=2, keepdims=True)
    repeat = -(-in_chans // 3)
    return np.tile(kernel, (1, 1, repeat, 1))[:, :, :in_chans] * (3.0 / in_chans)


def resize_bias_table(table, layer):
    """Resizes a timm relative-position bias table to `layer.size`: 'bias' [(2h-1)(2w-1), heads] (a square
    source window is assumed, as timm does for checkpoints) or 'bias_tf' [heads, 2h-1, 2w-1]."""
    h, w = layer.size
    dst = (2 * h - 1, 2 * w - 1)
    if layer.kind == "bias_tf":
        return np.stack([resize_grid(t, dst) for t in table])
    n = table.shape[0]
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"Cannot resize a non-square relative position table of {n} entries to {dst}.")
    grids = table.T.reshape(-1, side, side)
    return np.stack([resize_grid(g, dst).reshape(-1) for g in grids], axis=1)


def load_state_dict(model, state_dict, skip=(), source=""):
    """Assigns a timm `state_dict` ({key: array}) to `model`, strictly.

    skip: key prefixes left out on both sides (e.g. ("head.",) when the model has no classifier, or
    ("head.fc.",) to keep a new classifier as initialized).
    Raises ValueError naming the first offending tensors on missing, unexpected or mis-shaped tensors, so a
    load is never silently partial. Returns the list of timm keys loaded.
    """
    where = f" in {source}" if source else ""
    targets = variable_map(model)
    given = {k: v for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIXES)}
    if skip:
        given = {k: v for k, v in given.items() if not k.startswith(tuple(skip))}
        targets = {k: v for k, v in targets.items() if not k.startswith(tuple(skip))}
    missing = sorted(set(targets) - set(given))
    unexpected = sorted(set(given) - set(targets))
    if missing or unexpected:
        raise ValueError(
            f"Weights{where} do not match this architecture: {len(missing)} tensors missing "
            f"(first: {missing[:5]}), {len(unexpected)} unexpected (first: {unexpected[:5]}). "
            "Check that the model name/config matches the checkpoint.")
    assignments, bad = [], []
    for key, (variable, layer) in targets.items():
        value = to_keras_layout(given[key], variable, layer)
        if key == STEM_CONV and value.ndim == 4 and value.shape[2] != variable.shape[2]:
            value = adapt_input_conv(value, variable.shape[2]).astype(value.dtype)
            log.info("Adapted %s from 3 to %d input channels as timm does.", key, variable.shape[2])
        if isinstance(layer, RelativePositionBias) and value.shape != tuple(variable.shape) and layer.kind != "mlp":
            value = resize_bias_table(value, layer)
            log.info("Resized %s from %s to %s for a %dx%d feature map.", key, given[key].shape, value.shape,
                     *layer.size)
        if value.shape != tuple(variable.shape):
            bad.append(f"{key}: checkpoint {tuple(given[key].shape)} vs model {tuple(variable.shape)}")
        assignments.append((variable, value))
    if bad:
        raise ValueError(f"Weights{where} have {len(bad)} tensors of the wrong shape (first: {bad[:5]}). "
                         "Check the model config and number of classes.")
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype) if hasattr(value, "astype") else value)
    return sorted(targets)

