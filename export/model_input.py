"""The model to export and what its input expects: loading and checking a CoAtNet .keras file (`load_model`,
`check_coatnet`, `input_size`) and its input convention (mean / std, raw 0-255 or normalized: `input_convention`,
`to_model_input`, `describe`)."""

import weakref
import zipfile
from pathlib import Path

import keras
import numpy as np

from export.errors import ExportError

EXPORT_STRIDE = 32  # export sizes: multiples of the network's 32x downsampling (even maps at every stage)
from keras_coatnet.layers.mbconv import MBConvBlock
from keras_coatnet.layers.stem import Stem
from keras_coatnet.layers.transformer import TransformerBlock

# A CoAtNet has a Stem and at least one kind of CoAtNet block.
COATNET_LAYERS = ({Stem, TransformerBlock}, {Stem, MBConvBlock})


def _starts_as_zip(path):
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def load_model(model_or_path):
    """A keras.Model from a model, a ``.keras`` path, or a timm checkpoint (hf://owner/repo or a folder with
    config.json); ExportError / FileNotFoundError with the reason."""
    if isinstance(model_or_path, keras.Model):
        return model_or_path
    from keras_coatnet import hub

    if hub.is_source(model_or_path):
        import keras_coatnet

        try:
            return keras_coatnet.from_pretrained(model_or_path)
        except (ValueError, OSError) as e:
            raise ExportError(str(e)) from e
    path = Path(model_or_path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} not found (expected a .keras file saved with model.save)")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path) and _starts_as_zip(path):
        raise ExportError(f"{path} is truncated or corrupt ({path.stat().st_size} bytes, the end of its zip archive "
                          "is missing: an interrupted save, copy or download?); save or copy it again")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ExportError(f"{path} is not a Keras v3 .keras archive (save the model with model.save('m.keras'))")
    import keras_coatnet  # noqa: F401 - registers the CoAtNet layers for deserialization

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for corrupt archives
        if _damaged(e):
            raise ExportError(f"{path} is truncated or corrupt (its zip archive is complete, but a file in it "
                              f"does not read back: {type(e).__name__}); save or copy it again") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"cannot load {path}: {first}") from e


def _damaged(exc):
    """Whether ``exc`` (from keras.models.load_model) says the archive's bytes are bad: a zip CRC / inflate error,
    a short read, or an error raised inside h5py (the weights file)."""
    import zlib

    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    inside = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError)) or inside.split(".")[0] == "h5py"


def check_coatnet(model):
    """Raises ExportError unless ``model`` is a keras_coatnet classifier (has a Stem and CoAtNet blocks)."""
    kinds = {type(layer) for layer in model.layers}
    if not any(required <= kinds for required in COATNET_LAYERS):
        raise ExportError(f"model {model.name!r} is not a keras_coatnet CoAtNet (no Stem / CoAtNet blocks); "
                          "export models built with keras_coatnet.create_model")


def input_size(model, requested=None):
    """The fixed (H, W) to export at: the model's own size, or ``requested`` (multiples of 32; for a model built
    with None sides, any such size: its tables are resized for it)."""
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[-1] != 3:
        raise ExportError(f"model input must be NHWC RGB [batch, H, W, 3]; got {tuple(shape)}")
    built = tuple(shape[1:3])
    if requested is not None:
        requested = (int(requested), int(requested)) if isinstance(requested, int) else tuple(map(int, requested))
        if len(requested) != 2 or any(n < EXPORT_STRIDE or n % EXPORT_STRIDE for n in requested):
            raise ExportError(f"input size {requested} must be two multiples of {EXPORT_STRIDE} (at least "
                              f"{EXPORT_STRIDE})")
        if None not in built and requested != built:
            raise ExportError(f"model was built for {built[0]}x{built[1]} input (its relative attention is sized "
                              f"for it); export at that size or rebuild the model for {requested[0]}x{requested[1]}")
        return requested
    if None in built:
        raise ExportError("model has no fixed input size; pass --input-size")
    return built


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
