"""Builds a CoAtNet Keras model from a config dict (timm's `MaxxVitCfg` layout, see `config.py`). NHWC.

Layer names are timm's module paths spelled without dots (`naming`: "stem", "stages__2__blocks__0", "norm",
"head__fc", ...): stage i's output is the output of its last block, and `timm_weights` maps timm `state_dict`
keys onto the layers by these names.
"""

import keras
import numpy as np
from keras import layers

from keras_coatnet.config import block_plan, resolve_config
from keras_coatnet.layers import MBConvBlock, Stem, TransformerBlock
from keras_coatnet.layers.common import norm_layer
from keras_coatnet.naming import block_index, keras_name
from keras_coatnet.preprocessing import Normalize

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TIMM_MEAN, TIMM_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
STRIDE = 32


def _check_input_shape(input_shape, input_tensor):
    """Returns (H, W, C) or raises a ValueError saying what is allowed."""
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
            raise ValueError(f"input_tensor must be 4-D [batch, height, width, 3] (NHWC); got shape "
                             f"{tuple(input_tensor.shape)}.")
        tensor_shape = tuple(input_tensor.shape[1:])
        if input_shape is not None and tuple(input_shape) != tensor_shape:
            raise ValueError(f"input_shape {tuple(input_shape)} does not match input_tensor's {tensor_shape}.")
        input_shape = tensor_shape
    if input_shape is None:
        input_shape = (224, 224, 3)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, 3) (NHWC); got {tuple(input_shape)}.")
    h, w, c = input_shape
    if c != 3:
        raise ValueError(f"input_shape must have 3 (RGB) channels last (NHWC); got {c} channels in "
                         f"{tuple(input_shape)}.")
    for side, n in (("height", h), ("width", w)):
        if n is None:
            raise ValueError("CoAtNet needs a fixed input size (its relative attention is built for the feature "
                             f"map size); got {side}=None. Pass e.g. input_shape=(224, 224, 3).")
        if n < STRIDE or n % STRIDE:
            raise ValueError(f"Input {side} must be a multiple of {STRIDE} and at least {STRIDE} (the network "
                             f"downsamples 32x); got {n}.")
    return int(h), int(w), 3


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
                drop_path_rate=0.0, dropout_rate=0.0, mean=TIMM_MEAN, std=TIMM_STD):
    """Returns a `keras.Model` for a (possibly partial) timm `MaxxVitCfg` dict.

    Input: [B, H, W, 3] NHWC, raw 0-255 RGB when `include_preprocessing` (normalized inside with `mean`/`std`
    given on the 0-1 scale), else already normalized. Output: [B, classes] with `include_top`; else the final
    feature map [B, H/32, W/32, C] or, with `pooling`, [B, C].
    """
    cfg = resolve_config(cfg)
    check_head_args(include_top, pooling, classes)
    h, w, _ = _check_input_shape(input_shape, input_tensor)
    inputs = input_tensor if input_tensor is not None else keras.Input((h, w, 3), name="image")
    x = inputs
    if include_preprocessing:
        x = Normalize(mean, std, name="preprocessing")(x)
    x = make_stem(cfg)(x)
    rates = np.concatenate(drop_path_rates(cfg["depths"], drop_path_rate))
    for rate, b in zip(rates, block_plan(cfg)):
        x = make_block(cfg, b, (h, w), float(rate))(x)
    x = add_head(x, cfg, include_top, pooling, classes, classifier_activation, dropout_rate)
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    return keras.Model(inputs, x, name=name)


def make_stem(cfg):
    c = cfg["conv_cfg"]
    return Stem(cfg["stem_width"], cfg["stem_bias"], c["act_layer"], c["norm_layer"], c["norm_eps"], c["padding"],
                name="stem")


def make_block(cfg, b, image_size, drop_path=0.0):
    """The block layer for one entry `b` of `block_plan(cfg)` in a model taking `image_size` (H, W) inputs."""
    name = keras_name(f"stages.{b['stage']}.blocks.{b['index']}")
    if b["type"] == "C":
        return MBConvBlock(b["in_dim"], b["out_dim"], b["stride"], cfg["conv_cfg"], drop_path, name=name)
    size = (image_size[0] // b["reduction"], image_size[1] // b["reduction"])
    return TransformerBlock(b["in_dim"], b["out_dim"], b["stride"], size, cfg["transformer_cfg"], drop_path,
                            name=name)


def add_head(x, cfg, include_top=True, pooling=None, classes=1000, classifier_activation="softmax",
             dropout_rate=0.0):
    """timm's head on the last feature map x [B, h, w, C]: final norm (or, with `head_hidden_size`, pool ->
    norm -> tanh pre-logits), then the classifier; or, without top, the feature map, optionally pooled."""
    t = cfg["transformer_cfg"]
    norm = lambda n: norm_layer(t["norm_layer"], t["norm_eps"], n, keras.DTypePolicy("float32"))
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
    h, w, _ = _check_input_shape(input_shape, None)
    count = lambda layer: sum(int(np.prod(v.shape)) for v in (layer.trainable_weights if trainable_only
                                                               else layer.weights))
    total = count(_built(make_stem(cfg), (h, w, 3)))
    plan = block_plan(cfg)
    signature = lambda b: (b["type"], b["in_dim"], b["out_dim"], b["stride"], b["reduction"])
    for sig, n in collections.Counter(signature(b) for b in plan).items():
        b = next(b for b in plan if signature(b) == sig)
        r_in = b["reduction"] // b["stride"]
        total += n * count(_built(make_block(cfg, b, (h, w)), (h // r_in, w // r_in, b["in_dim"])))
    last = plan[-1]
    inputs = keras.Input((h // last["reduction"], w // last["reduction"], last["out_dim"]))
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
