"""What a model's input expects, read from the model itself (its ``Normalize`` layer, or the lack of one).

A model with a ``keras_coatnet.preprocessing.Normalize`` layer before its stem (include_preprocessing=True)
takes raw 0-255 RGB and normalizes inside with that layer's mean / std. A model without one takes
already-normalized input (x / 255 - mean) / std, and only its maker knows mean / std: they must be given
(``--input-mean`` / ``--input-std``). Layer names are never consulted.
"""

import weakref

import numpy as np

from export.errors import ExportError

_RESOLVED = weakref.WeakKeyDictionary()  # model -> its convention, once resolved (later calls may omit mean/std)

TIMM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _normalize_layer(model):
    from keras_coatnet.layers.stem import Stem
    from keras_coatnet.preprocessing import Normalize

    for layer in model.layers:
        if isinstance(layer, Normalize):
            return layer
        if isinstance(layer, Stem):  # a Normalize after the stem is not an input normalization
            return None
    return None


def _triple(values, what):
    if values is None:
        return None
    values = tuple(float(v) for v in (values if np.ndim(values) else [values] * 3))
    if len(values) != 3 or (what == "std" and min(values) <= 0):
        raise ExportError(f"--input-{what} needs 3 values (R G B on the 0-1 scale{', > 0' if what == 'std' else ''});"
                          f" got {list(values)}")
    return values


def input_convention(model, mean=None, std=None):
    """{"normalized_inside": bool, "mean": [3], "std": [3]}: the model's input normalization (0-1 scale).

    normalized_inside=True: the model takes raw 0-255 RGB (mean / std are its Normalize layer's).
    normalized_inside=False: the model takes (x / 255 - mean) / std, with ``mean`` / ``std`` as given."""
    mean, std = _triple(mean, "mean"), _triple(std, "std")
    if mean is None and std is None and model in _RESOLVED:
        return _RESOLVED[model]
    _RESOLVED[model] = convention = _read(model, mean, std)
    return convention


def _read(model, mean, std):
    layer = _normalize_layer(model)
    if layer is not None:
        if (mean is not None and not np.allclose(mean, layer.mean)) or (std is not None and not np.allclose(std, layer.std)):
            raise ExportError(f"model {model.name!r} normalizes its input itself (mean {list(layer.mean)}, std "
                              f"{list(layer.std)}); --input-mean / --input-std disagree with it: leave them out")
        return {"normalized_inside": True, "mean": list(layer.mean), "std": list(layer.std)}
    if mean is None or std is None:
        raise ExportError(
            f"model {model.name!r} has no Normalize layer (built with include_preprocessing=False): it takes "
            "normalized input; say which with --input-mean and --input-std (0-1 scale; timm CoAtNet 0.5 0.5 0.5 / "
            "0.5 0.5 0.5, coatnet_bn_0_rw ImageNet 0.485 0.456 0.406 / 0.229 0.224 0.225)")
    return {"normalized_inside": False, "mean": list(mean), "std": list(std)}


def to_model_input(images, convention):
    """Raw 0-255 RGB [..., 3] -> what the Keras model takes under ``convention`` (float32)."""
    from keras_coatnet.preprocessing import normalize

    x = np.asarray(images, np.float32)
    if convention["normalized_inside"]:
        return x
    return normalize(x, convention["mean"], convention["std"])


def describe(convention, uint8_input):
    """The input entry of report.json and of the .tflite metadata: what the file's float/uint8 input expects.

    "values": "raw_0_255" (RGB bytes as numbers) or "normalized" ((x / 255 - mean) / std per channel);
    integer input tensors with a scale take those values quantized (q = x / scale + zero_point)."""
    raw = uint8_input or convention["normalized_inside"]
    return {"layout": "NHWC", "color": "RGB", "dtype": "uint8" if uint8_input else "float32",
            "values": "raw_0_255" if raw else "normalized",
            "mean": None if raw else convention["mean"], "std": None if raw else convention["std"],
            "normalization_in_model": {"mean": convention["mean"], "std": convention["std"]}
            if (convention["normalized_inside"] or uint8_input) else None}
