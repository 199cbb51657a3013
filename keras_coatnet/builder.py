"""Builds a CoAtNet Keras model from a config dict (timm's `MaxxVitCfg` layout, see `config.py`). NHWC.

Layer names are timm's module paths spelled without dots (`naming`: "stem", "stages__2__blocks__0", "norm",
"head__fc", ...): stage i's output is the output of its last block, and `timm_weights` maps timm `state_dict`
keys onto the layers by these names.
"""

import keras
import numpy as np
from keras import layers

from keras_coatnet.config import TIMM_MEAN, TIMM_STD, block_plan, resolve_config
from keras_coatnet.layers import MBConvBlock, Normalize, Stem, TransformerBlock
from keras_coatnet.layers.common import halved, make_norm
from keras_coatnet.layers.mbconv import halves_to_ceiling
from keras_coatnet.naming import block_index, keras_name

MIN_SIZE = 32
DEFAULT_SIZE = (224, 224)


def _check_input_shape(input_shape, input_tensor, include_top=True):
    """Returns (H, W, C) (H, W: int >= 32 or None, run-time sizes) or raises a ValueError saying what is allowed.
    No shape: (224, 224, 3) with the classifier, else (None, None, 3), as keras.applications."""
    if keras.config.image_data_format() != "channels_last":
        raise ValueError("CoAtNet models are channels_last (NHWC) only; keras.config.image_data_format() is "
                         f"{keras.config.image_data_format()!r}. Call keras.config.set_image_data_format("
                         "'channels_last') before building, and feed NHWC images.")
    if input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            raise ValueError("input_tensor must be a Keras tensor (keras.Input(...) or a layer's output); got a "
                             f"{type(input_tensor).__module__}.{type(input_tensor).__name__}. To run the model on "
                             "data, build it with input_shape=... and call model.predict(x).")
        if len(input_tensor.shape) != 4:
            raise ValueError(f"input_tensor must be 4-D [batch, height, width, channels] (NHWC); got shape "
                             f"{tuple(input_tensor.shape)}.")
        tensor_shape = tuple(input_tensor.shape[1:])
        if input_shape is not None and tuple(input_shape) != tensor_shape:
            raise ValueError(f"input_shape {tuple(input_shape)} does not match input_tensor's {tensor_shape}.")
        input_shape = tensor_shape
    if input_shape is None:
        input_shape = (*DEFAULT_SIZE, 3) if include_top else (None, None, 3)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels) (NHWC); got {tuple(input_shape)}.")
    h, w, c = input_shape
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
        raise ValueError(f"input_shape needs a number of channels >= 1 last (NHWC); got {c!r} in "
                         f"{tuple(input_shape)}.")
    for side, n in (("height", h), ("width", w)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < MIN_SIZE):
            raise ValueError(f"Input {side} must be at least {MIN_SIZE} (the network downsamples 32x), or None "
                             f"for any size at run time; got {n!r}.")
    return (None if h is None else int(h)), (None if w is None else int(w)), int(c)


def feature_sizes(cfg, image_size):
    """(h, w) of the output map of the stem and of each block of `block_plan(cfg)`, for an H x W input (None
    stays None): the stem and the strided-conv MBConvs halve a side to its ceiling, pooling MBConvs
    (`stride_mode='pool'`) to its floor (ceiling with `padding='same'`), as timm; Transformer blocks to its
    ceiling (see `TransformerBlock`)."""
    cfg = resolve_config(cfg)
    conv_ceil = halves_to_ceiling(cfg["conv_cfg"]["stride_mode"], cfg["conv_cfg"]["padding"])
    size = tuple(halved(n, True) for n in image_size)
    sizes = [size]
    for b in block_plan(cfg):
        if b["stride"] == 2:
            size = tuple(halved(n, conv_ceil if b["type"] == "C" else True) for n in size)
        sizes.append(size)
    return sizes


def channel_mean_std(mean, std, channels):
    """(mean, std) with one value per input channel. A mean/std that is the same on every RGB channel (timm's
    0.5) applies to any number of channels; a per-channel RGB one (ImageNet's) only to 3, or raises."""
    if len(mean) == channels and len(std) == channels:
        return tuple(mean), tuple(std)
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return (mean[0],) * channels, (std[0],) * channels
    raise ValueError(f"include_preprocessing=True normalizes with an RGB mean {tuple(mean)} / std {tuple(std)}, but "
                     f"the input has {channels} channels: pass include_preprocessing=False and feed normalized "
                     f"input, or build_model(..., mean=, std=) with {channels} values each.")


def check_head_args(include_top, pooling, classes):
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max'; got {pooling!r}.")
    if include_top and (isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 1):
        raise ValueError(f"classes must be an integer >= 1 when include_top=True; got {classes!r}.")


def drop_path_rates(depths, rate):
    """Stochastic depth per block, rising linearly from 0 to `rate` over all blocks (timm's schedule)."""
    return list(np.split(np.linspace(0.0, rate, sum(depths)), np.cumsum(depths)[:-1]))


def build_model(cfg, include_top=True, input_tensor=None, input_shape=None, pooling=None, classes=1000,
                classifier_activation="softmax", include_preprocessing=True, name="coatnet",
                drop_path_rate=0.0, dropout_rate=0.0, mean=TIMM_MEAN, std=TIMM_STD, table_size=None):
    """Returns a `keras.Model` for a (possibly partial) timm `MaxxVitCfg` dict.

    Input: [B, H, W, C] NHWC, any H, W >= 32 where `input_shape` has None. Raw 0-255 values when
    `include_preprocessing` (normalized inside with `mean`/`std`, C values on the 0-1 scale), else already
    normalized. Output: [B, classes] with `include_top`; else the final feature map [B, ~H/32, ~W/32, C'] or,
    with `pooling`, [B, C']. The relative-position tables are made for the input size; where a side is None,
    for that side of `table_size` (a checkpoint's size; default 224). At other sizes they are resized in the
    graph, as the weight loader resizes a checkpoint.
    """
    cfg = resolve_config(cfg)
    check_head_args(include_top, pooling, classes)
    h, w, c = _check_input_shape(input_shape, input_tensor, include_top)
    if include_preprocessing:
        mean, std = channel_mean_std(mean, std, c)
    table_size = table_size or DEFAULT_SIZE
    table_size = (h or table_size[0], w or table_size[1])
    inputs = input_tensor if input_tensor is not None else keras.Input((h, w, c), name="image")
    x = inputs
    if include_preprocessing:
        x = Normalize(mean, std, name="preprocessing")(x)
    x = make_stem(cfg)(x)
    rates = np.concatenate(drop_path_rates(cfg["depths"], drop_path_rate))
    table_sizes = feature_sizes(cfg, table_size)[1:]
    for rate, b, size in zip(rates, block_plan(cfg), table_sizes):
        x = make_block(cfg, b, size, float(rate))(x)
    x = add_head(x, cfg, include_top, pooling, classes, classifier_activation, dropout_rate)
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    return keras.Model(inputs, x, name=name)


def make_stem(cfg):
    c = cfg["conv_cfg"]
    return Stem(cfg["stem_width"], cfg["stem_bias"], c["act_layer"], c["norm_layer"], c["norm_eps"], c["padding"],
                name="stem")


def block_args(cls, part_cfg):
    """The keyword arguments of block class `cls` (its `ARGS`) from a resolved timm `conv_cfg` /
    `transformer_cfg` dict."""
    return {name: part_cfg[name] for name in cls.ARGS}


def make_block(cfg, b, size, drop_path=0.0):
    """The block layer for one entry `b` of `block_plan(cfg)`; `size`: its output map (h, w) at the size its
    relative-position table is trained for (`feature_sizes`)."""
    name = keras_name(f"stages.{b['stage']}.blocks.{b['index']}")
    if b["type"] == "C":
        return MBConvBlock(b["in_dim"], b["out_dim"], b["stride"], **block_args(MBConvBlock, cfg["conv_cfg"]),
                           drop_path=drop_path, name=name)
    return TransformerBlock(b["in_dim"], b["out_dim"], b["stride"], size,
                            **block_args(TransformerBlock, cfg["transformer_cfg"]), drop_path=drop_path, name=name)


def add_head(x, cfg, include_top=True, pooling=None, classes=1000, classifier_activation="softmax",
             dropout_rate=0.0):
    """timm's head on the last feature map x [B, h, w, C]: final norm (or, with `head_hidden_size`, pool ->
    norm -> tanh pre-logits), then the classifier; or, without top, the feature map, optionally pooled."""
    t = cfg["transformer_cfg"]
    norm = lambda n: make_norm(t["norm_layer"], t["norm_eps"], n, keras.DTypePolicy("float32"))
    hidden = cfg["head_hidden_size"]
    if not hidden:
        x = norm("norm")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="head__global_pool")(x)
        if hidden:
            x = norm("head__norm")(x)
            x = layers.Dense(hidden, activation="tanh", name="head__pre_logits__fc")(x)
        if dropout_rate:
            x = layers.Dropout(dropout_rate, name="head__drop")(x)
        x = layers.Dense(classes, name="head__fc")(x)
        return layers.Activation(classifier_activation, name="predictions", dtype="float32")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def count_params(cfg, input_shape=(224, 224, 3), classes=1000, trainable_only=True):
    """Parameter count of the model `build_model(cfg, ...)` would build, without allocating it whole: each
    distinct block is built once and counted as often as it occurs (so CoAtNet-7 can be counted in ~1 GB).
    `trainable_only` excludes BatchNorm moving statistics, as PyTorch's parameter count does."""
    import collections

    cfg = resolve_config(cfg)
    h, w, c = _check_input_shape(input_shape, None)
    if h is None or w is None:
        raise ValueError(f"count_params needs a fixed input size; got {tuple(input_shape)}.")
    count = lambda layer: sum(int(np.prod(v.shape)) for v in (layer.trainable_weights if trainable_only
                                                               else layer.weights))
    sizes = feature_sizes(cfg, (h, w))
    total = count(_built(make_stem(cfg), (h, w, c)))
    plan = block_plan(cfg)
    signature = lambda i: (plan[i]["type"], plan[i]["in_dim"], plan[i]["out_dim"], plan[i]["stride"], sizes[i + 1])
    for sig, n in collections.Counter(signature(i) for i in range(len(plan))).items():
        i = next(i for i in range(len(plan)) if signature(i) == sig)
        total += n * count(_built(make_block(cfg, plan[i], sizes[i + 1]), (*sizes[i], plan[i]["in_dim"])))
    inputs = keras.Input((*sizes[-1], plan[-1]["out_dim"]))
    total += count(keras.Model(inputs, add_head(inputs, cfg, classes=classes)))
    return total


def _built(layer, shape):
    layer(keras.Input(shape))
    return layer


def stage_outputs(model):
    """The output tensors of each stage (the last block of each), in order: [B, H/4, W/4, C0], ..."""
    last = {}
    for layer in model.layers:
        index = block_index(layer.name)
        if index is not None:
            last[index[0]] = layer
    return [last[i].output for i in sorted(last)]


def feature_model(model):
    """A model from the same inputs to the list of stage outputs (NHWC), sharing `model`'s weights."""
    return keras.Model(model.inputs, stage_outputs(model), name=f"{model.name}_features")
