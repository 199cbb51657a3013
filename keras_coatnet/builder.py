"""Builds a CoAtNet Keras model from a config dict (timm's `MaxxVitCfg` layout, see `config.py`). NHWC.

Layer names are timm's module paths ("stem", "stages.2.blocks.0", "norm", "head.fc", ...): stage i's output is
the output of its last block, and `timm_weights` maps timm `state_dict` keys onto the layers by these names.
"""

import keras
import numpy as np
from keras import layers

from keras_coatnet.config import block_plan, resolve_config
from keras_coatnet.layers import MBConvBlock, Stem, TransformerBlock
from keras_coatnet.preprocessing import Normalize

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TIMM_MEAN, TIMM_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
STRIDE = 32


def _check_input_shape(input_shape, input_tensor):
    """Returns (H, W, C) or raises a ValueError saying what is allowed."""
    if input_tensor is not None:
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
    conv_cfg, tfm_cfg = cfg["conv_cfg"], cfg["transformer_cfg"]
    inputs = input_tensor if input_tensor is not None else keras.Input((h, w, 3), name="image")
    x = inputs
    if include_preprocessing:
        x = Normalize(mean, std, name="preprocessing")(x)
    x = Stem(cfg["stem_width"], cfg["stem_bias"], conv_cfg["act_layer"], conv_cfg["norm_layer"],
             conv_cfg["norm_eps"], conv_cfg["padding"], name="stem")(x)
    rates = np.concatenate(drop_path_rates(cfg["depths"], drop_path_rate))
    for rate, b in zip(rates, block_plan(cfg)):
        block_name = f"stages.{b['stage']}.blocks.{b['index']}"
        if b["type"] == "C":
            block = MBConvBlock(b["in_dim"], b["out_dim"], b["stride"], conv_cfg, float(rate), name=block_name)
        else:
            size = (h // b["reduction"], w // b["reduction"])
            block = TransformerBlock(b["in_dim"], b["out_dim"], b["stride"], size, tfm_cfg, float(rate),
                                     name=block_name)
        x = block(x)

    norm = lambda n: (layers.BatchNormalization(epsilon=tfm_cfg["norm_eps"], momentum=0.9, name=n, dtype="float32")
                      if tfm_cfg["norm_layer"].startswith("batchnorm") else
                      layers.LayerNormalization(epsilon=tfm_cfg["norm_eps"], name=n, dtype="float32"))
    hidden = cfg["head_hidden_size"]
    if not hidden:
        x = norm("norm")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="head.global_pool")(x)
        if hidden:
            x = norm("head.norm")(x)
            x = layers.Dense(hidden, activation="tanh", name="head.pre_logits.fc")(x)
        if dropout_rate:
            x = layers.Dropout(dropout_rate, name="head.drop")(x)
        x = layers.Dense(classes, name="head.fc")(x)
        x = layers.Activation(classifier_activation, name="predictions", dtype="float32")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    return keras.Model(inputs, x, name=name)


def stage_outputs(model):
    """The output tensors of each stage (the last block of each), in order: [B, H/4, W/4, C0], ..."""
    last = {}
    for layer in model.layers:
        parts = layer.name.split(".")
        if len(parts) == 4 and parts[0] == "stages":
            last[int(parts[1])] = layer
    return [last[i].output for i in sorted(last)]


def feature_model(model):
    """A model from the same inputs to the list of stage outputs (NHWC), sharing `model`'s weights."""
    return keras.Model(model.inputs, stage_outputs(model), name=f"{model.name}_features")
