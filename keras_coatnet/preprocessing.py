"""Input normalization and prediction decoding, as in `keras.applications`. Images are NHWC RGB."""

import functools
import os

import numpy as np
from keras import ops

from keras_coatnet.config import TIMM_MEAN, TIMM_STD
from keras_coatnet.layers.normalize import Normalize

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
LABEL_FILES = {1000: "imagenet1k_labels.tsv", 11821: "imagenet12k_labels.tsv"}


def preprocess_input(x, data_format=None):
    """Returns `x` unchanged: the `keras.applications` convention for models that normalize inside (ConvNeXt,
    EfficientNetV2). Our models do by default (`include_preprocessing=True`: they take raw 0-255 RGB), so
    `model.predict(preprocess_input(x))` gives the model's predictions. For a model built with
    `include_preprocessing=False`, normalize with `normalize_input(x, model_name, weights)` instead.
    `data_format` is accepted as in keras.applications (None, "channels_last" or "channels_first")."""
    if data_format not in (None, "channels_last", "channels_first"):
        raise ValueError(f"data_format must be None, 'channels_last' or 'channels_first'; got {data_format!r}.")
    return x


def input_mean_std(model_name=None, weights=None):
    """(mean, std) on the 0-1 scale a model is trained with: the published `weights`' (a tag such as
    'imagenet') of registered `model_name`, else the model's, else timm's CoAtNet default (0.5, 0.5)."""
    if weights is not None:
        from keras_coatnet.pretrained import get_weights

        entry = get_weights(model_name, weights)
        return entry.mean, entry.std
    if model_name is not None:
        from keras_coatnet.pretrained import default_eval

        entry = default_eval(model_name)
        return entry.mean, entry.std
    return TIMM_MEAN, TIMM_STD


def normalize_input(x, model_name=None, weights=None):
    """Normalizes raw 0-255 RGB images [..., H, W, 3] (NHWC) for a model built with
    `include_preprocessing=False`: (x / 255 - mean) / std with the mean/std of `input_mean_std(model_name,
    weights)` (timm's 0.5 for most CoAtNets; ImageNet's for coatnet_bn_0_rw). Returns a float32 array (NumPy
    in, NumPy out) or a backend tensor."""
    return normalize(x, *input_mean_std(model_name, weights))


def normalize(x, mean, std):
    """(x / 255 - mean) / std per channel for raw 0-255 RGB images [..., H, W, 3] (NHWC); ``mean`` / ``std``:
    three values on the 0-1 scale. A float32 NumPy array for NumPy input (or a list), else a backend tensor."""
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        x = np.asarray(x, "float32")
        if x.shape[-1] != 3:
            raise ValueError(f"normalize_input expects RGB images with 3 channels last (NHWC); got {x.shape}.")
        return (x / 255.0 - np.array(mean, "float32")) / np.array(std, "float32")
    return Normalize(mean, std)(ops.cast(x, "float32"))


@functools.lru_cache(maxsize=None)
def class_names(num_classes):
    """[(synset id, name)] for the ImageNet heads we ship labels for (1000 and 11821 classes)."""
    if num_classes not in LABEL_FILES:
        raise ValueError(f"No class labels for a {num_classes}-class head; labels ship for "
                         f"{sorted(LABEL_FILES)} classes (ImageNet-1k and timm's ImageNet-12k).")
    with open(os.path.join(DATA_DIR, LABEL_FILES[num_classes]), encoding="utf-8") as f:
        return tuple(tuple(line.rstrip("\n").split("\t", 1)) for line in f)


def decode_predictions(preds, top=5, label_names=None):
    """Turns [B, classes] scores into, per image, a list of `top` (class id, name, score), best first.

    label_names: the checkpoint's class names (a model's `label_names`, from its config.json), ids "0", "1",
    ...; default ImageNet's synset ids and names for 1000 / 11821 classes."""
    preds = np.asarray(preds)
    if preds.ndim != 2:
        raise ValueError(f"decode_predictions expects a batch of scores [batch, classes]; got shape {preds.shape}.")
    if label_names is not None:
        if len(label_names) != preds.shape[1]:
            raise ValueError(f"{len(label_names)} label_names for {preds.shape[1]} classes.")
        names = [(str(i), n) for i, n in enumerate(label_names)]
    else:
        names = class_names(preds.shape[1])
    out = []
    for row in preds:
        idx = np.argsort(row)[::-1][:top]
        out.append([(names[i][0], names[i][1], float(row[i])) for i in idx])
    return out


PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def eval_transform(image, eval_config):
    """timm's eval transform without its normalization: resize (shorter side to floor(size / crop_pct) for
    'center', both sides for 'squash', with `eval_config.interpolation`), then a center crop to
    `eval_config.input_size`. `image`: a path, a PIL image or an [H, W, 3] uint8 RGB array. Returns [h, w, 3]
    uint8 RGB, the raw input of a model built with `include_preprocessing=True` (a model's `eval_config`)."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            image = im.convert("RGB")
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, np.uint8))
    image = image.convert("RGB")
    if eval_config.interpolation not in PIL_FILTERS:
        raise ValueError(f"interpolation {eval_config.interpolation!r}; expected one of {sorted(PIL_FILTERS)}.")
    th, tw = eval_config.input_size
    sh, sw = eval_config.resize_size
    w, h = image.size
    if eval_config.crop_mode == "squash":
        size = (sw, sh)
    elif eval_config.crop_mode == "center":
        if sh == sw:  # the shorter side to sh, the longer in proportion (rounded down)
            size = (sh, int(sh * h / w)) if w <= h else (int(sh * w / h), sh)
        else:  # both sides by the smaller of the two ratios
            ratio = min(h / sh, w / sw)
            size = (round(w / ratio), round(h / ratio))
    else:
        raise ValueError(f"crop_mode {eval_config.crop_mode!r}; expected 'center' or 'squash'.")
    image = image.resize(size, PIL_FILTERS[eval_config.interpolation])
    w, h = image.size
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return np.asarray(image.crop((left, top, left + tw, top + th)), np.uint8)
