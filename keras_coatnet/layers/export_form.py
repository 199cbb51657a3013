"""What the blocks' export forms (`export_call`) share: the TFLite-friendly forms of convs, pools, norms and
activations, on static-shape TensorFlow tensors (batch 1, NHWC; Transformer blocks on 2-D [tokens, channels]).

Weights are folded as NumPy (`folding`) and enter the graph as constants. The forms keep a quantized graph inside
XNNPACK: 2x2 average pools as depthwise convs, LayerNorm's `var + eps` as one FULLY_CONNECTED, a LayerNorm
affine as a 1x1 depthwise conv (docs/export.md lists why). Export only: TensorFlow is imported on use.
"""

import dataclasses

import numpy as np
from keras import layers

from keras_coatnet.layers.folding import Conv, norm_affine

GELU_MODES = ("exact", "tanh", "sigmoid")
ATTENTION_MODES = ("batched", "per_head")
REL_BIAS_MODES = ("constant", "table")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How an export form builds its graph.

    gelu: 'exact' (the TFLite GELU op), 'tanh' or 'sigmoid' (x * sigmoid(1.702 x)): faster approximations.
    attention: 'batched' (one BATCH_MATMUL over heads) or 'per_head' (2-D matmuls: FULLY_CONNECTED with run-time
    weights, the integer kernel integer-only accelerators take). rel_bias: 'constant' (the expanded bias
    [heads, N, N] stored) or 'table' (the small table stored, expanded at run time by tile / slice / reshape)."""

    gelu: str = "exact"
    attention: str = "batched"
    rel_bias: str = "constant"

    def __post_init__(self):
        for what, allowed in (("gelu", GELU_MODES), ("attention", ATTENTION_MODES), ("rel_bias", REL_BIAS_MODES)):
            if getattr(self, what) not in allowed:
                raise ValueError(f"unknown {what} mode {getattr(self, what)!r}; allowed: {allowed}")

    def as_dict(self):
        return dataclasses.asdict(self)


def tf():
    import tensorflow

    return tensorflow


def const(a):
    """A float32 graph constant."""
    return tf().constant(np.asarray(a, np.float32))


def activation(name, options):
    """The TF activation for a timm act_layer name, GELU per `options.gelu` (timm's 'gelu_tanh' stays tanh)."""
    t = tf()
    if name in ("gelu", "gelu_tanh"):
        mode = "tanh" if name == "gelu_tanh" and options.gelu == "exact" else options.gelu
        if mode == "sigmoid":
            return lambda x: x * t.sigmoid(1.702 * x)
        return lambda x: t.nn.gelu(x, approximate=(mode == "tanh"))
    return {"silu": t.nn.silu, "swish": t.nn.silu, "relu": t.nn.relu, "tanh": t.tanh}[name]


def conv(c, x):
    """A folded `Conv` on NHWC x."""
    t = tf()
    if c.depthwise:
        y = t.nn.depthwise_conv2d(x, const(c.kernel), [1, c.strides, c.strides, 1], c.padding)
    else:
        y = t.nn.conv2d(x, const(c.kernel), c.strides, c.padding)
    return t.nn.bias_add(y, const(c.bias))


def linear(lin, x):
    """A `Linear` on 2-D [N, Cin] x -> [N, Cout] (a TFLite FULLY_CONNECTED)."""
    return tf().matmul(x, const(lin.w)) + const(lin.b)


def padded_conv(layer_list, x, scale_output=None):
    """A timm conv (list of [ZeroPadding2D], Conv: see `common.conv2d`) on NHWC x, with an optional
    (scale, shift) folded into its output."""
    *pads, last = layer_list
    for pad in pads:
        x = pad(x)
    c = Conv.from_layer(last)
    if scale_output is not None:
        c.scale_output(*scale_output)
    return conv(c, x)


def standardize(x, eps):
    """(x - mean) / sqrt(var + eps) over the last axis: LayerNorm without its affine (folded elsewhere).

    `var + eps` is one FULLY_CONNECTED (weights 1/C, bias eps) on the [tokens, C] squares: an int8 `+ eps` ADD is
    outside XNNPACK's scale limits."""
    t = tf()
    channels = x.shape[-1]
    d = x - t.reduce_mean(x, axis=-1, keepdims=True)
    mean_of_squares = const(np.full((channels, 1), 1.0 / channels))
    var = t.matmul(t.reshape(d * d, (-1, channels)), mean_of_squares) + const([eps])
    return d * t.math.rsqrt(t.reshape(var, (*d.shape[:-1], 1)))


def is_layernorm(norm):
    return isinstance(norm, layers.LayerNormalization)


def norm_then(norm, x):
    """(x', scale, shift): a LayerNorm gives standardized x and its affine, a BatchNorm x and its affine, for
    the caller to fold into the next linear op."""
    scale, shift = norm_affine(norm)
    return (standardize(x, norm.epsilon) if is_layernorm(norm) else x), scale, shift


def pool(p, x):
    """A `Pool2d` on NHWC x; 'avg2' (even sides) as a 2x2 stride-2 depthwise conv of weights 1/4, the same
    average, which XNNPACK runs in int8 (it has no int8 average pool)."""
    if p.pool_type != "avg2" or x.shape[1] % 2 or x.shape[2] % 2:
        return p(x)
    weights = np.full((2, 2, x.shape[-1], 1), 0.25)
    return tf().nn.depthwise_conv2d(x, const(weights), [1, 2, 2, 1], "VALID")


def shortcut(sc, x):
    """A block's shortcut on NHWC x: None (identity), or a `Downsample2d` (its 2x pool via `pool`, then the 1x1
    `expand` conv when the width changes)."""
    if sc is None:
        return x
    if sc.pool is not None:
        x = pool(sc.pool, x)
    return conv(Conv.from_layer(sc.expand), x) if sc.expand is not None else x


def layer_norm(norm, x):
    """A standalone LayerNormalization (the head's, [1, C]): `standardize`, then its affine as a 1x1 depthwise
    conv (an int8 ADD of a near-zero shift is outside XNNPACK's scale limits; a conv bias is not)."""
    t = tf()
    scale, shift = norm_affine(norm)
    y = standardize(x, norm.epsilon)
    channels = y.shape[-1]
    affine = Conv(np.reshape(scale, (1, 1, channels, 1)), np.asarray(shift), 1, "VALID", True)
    return t.reshape(conv(affine, t.reshape(y, (-1, 1, 1, channels))), y.shape)
