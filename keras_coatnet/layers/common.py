"""Small building blocks shared by the CoAtNet blocks. All tensors are NHWC.

Sub-layer names follow timm's module names (`conv1_1x1`, `norm1`, `shortcut.expand`, ...), which is what lets
`timm_weights` map a timm `state_dict` onto a model without a per-block table.
"""

import functools

import keras
import numpy as np
from keras import layers, ops

from keras_coatnet import _compat
from keras_coatnet.layers.folding import batchnorm_affine

PACKAGE = "keras_coatnet"
SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi), the standard normal density at 0


def gelu_exact(x):
    """Exact GELU, x * Phi(x) with Phi(x) = (1 + erf(x / sqrt(2))) / 2, the form timm's PyTorch kernel computes.
    Any shape and float dtype.

    Backends other than TensorFlow run their own exact GELU op. On TensorFlow the forward and the analytic gradient
    are each one XLA-compiled elementwise kernel (docs/benchmarks.md has what that saves in training), and the
    forward is written as 0.5 * x * (1 + erf(x / sqrt(2))) so that the TFLite converter recognizes one GELU op.
    """
    if keras.backend.backend() != "tensorflow":
        return ops.gelu(x, approximate=False)
    return _tf_gelu()(x)


@functools.cache
def _tf_gelu():
    """The TensorFlow exact GELU of `gelu_exact`: XLA-compiled forward, XLA-compiled analytic gradient."""
    import tensorflow as tf

    @tf.function(jit_compile=True, reduce_retracing=True)
    def forward(x):
        return 0.5 * x * (1.0 + tf.math.erf(x * SQRT_HALF))

    @tf.function(jit_compile=True, reduce_retracing=True)
    def gradient(x, dy):  # d/dx x * Phi(x) = Phi(x) + x * phi(x)
        cdf = 0.5 * (1.0 + tf.math.erf(x * SQRT_HALF))
        return dy * (cdf + x * INV_SQRT_2PI * tf.exp(-0.5 * tf.square(x)))

    @tf.custom_gradient
    def gelu(x):
        return forward(x), lambda dy: gradient(x, dy)

    return gelu


def activation(name):
    """Returns the activation function for a timm `act_layer` name (gelu is the exact erf form, as timm's)."""
    if name == "gelu":
        return gelu_exact
    if name == "gelu_tanh":
        return lambda x: ops.gelu(x, approximate=True)
    if name in ("silu", "swish"):
        return ops.silu
    if name == "relu":
        return ops.relu
    if name == "tanh":
        return ops.tanh
    raise ValueError(f"Unknown activation {name!r}.")


def float32_policy(policy):
    """The dtype policy for numerically sensitive layers (norms, softmax): float32 under mixed precision."""
    return "float32" if policy.compute_dtype != policy.variable_dtype else policy


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNorm(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (same arguments, weights and results), fused in training on TensorFlow.

    Keras 3 computes the training statistics and the normalization from separate ops (about ten passes over the
    activations with their gradients); this runs TensorFlow's FusedBatchNormV3 and its fused gradient, as tf.keras
    did. The math is Keras's: batch mean and biased variance, in the normalization and in the moving averages.

    The fused path is taken for a trainable layer in training mode on the TensorFlow backend, over the last axis
    of a 4-D input, with `center` and `scale`; Keras's own computation runs otherwise (other backends,
    inference, `synchronized`, masks, `renorm`). Input [B, H, W, C] -> same, in the layer's compute dtype.
    """

    def fuses(self, inputs, training=None, mask=None):
        """Whether a call with these arguments takes the fused path (see the class docstring)."""
        return (training and self.trainable and keras.backend.backend() == "tensorflow" and mask is None
                and not self.synchronized and not self.renorm and self.center and self.scale
                and len(inputs.shape) == 4 and self.axis in (-1, 3))

    def call(self, inputs, training=None, mask=None):
        if not self.fuses(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = ops.cast(inputs, "float32")
        empty = tf.constant([], tf.float32)
        # TensorFlow's own fused_batch_norm raises epsilon to at least 1.001e-5 for cuDNN's minimum (1e-5); so does
        # this (timm's 1e-5 moves by 1e-8: ~5e-9 relative on a normalized value at unit variance).
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=ops.cast(self.gamma, "float32"), offset=ops.cast(self.beta, "float32"), mean=empty,
            variance=empty, epsilon=max(self.epsilon, 1.001e-5), exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        # The kernel returns the unbiased variance n/(n-1) * var; the moving average keeps Keras's biased one.
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
        variance = variance * tf.maximum(n - 1.0, 0.0) / n
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + ops.cast(mean, self.moving_mean.dtype) * (1.0 - m))
        self.moving_variance.assign(
            self.moving_variance * m + ops.cast(variance, self.moving_variance.dtype) * (1.0 - m))
        return ops.cast(y, self.compute_dtype)


def make_norm(kind, eps, name, dtype_policy):
    """BatchNorm or LayerNorm over the channel axis of NHWC (timm `batchnorm2d`/`layernorm2d`), kept in float32
    under mixed precision. BatchNorm momentum 0.9 is PyTorch's 0.1."""
    policy = float32_policy(dtype_policy)
    if kind.startswith("batchnorm"):
        return BatchNorm(epsilon=eps, momentum=0.9, name=name, dtype=policy)
    return layers.LayerNormalization(epsilon=eps, name=name, dtype=policy)


def timm_padding(kernel_size, stride, padding):
    """How to reproduce timm's conv/pool padding in Keras: returns (explicit_pad, keras_padding).

    timm's default ('') pads symmetrically by ((stride - 1) + (k - 1)) // 2, which for even inputs and stride 2
    differs from Keras 'same' (Keras pads bottom/right only), so it is done with an explicit pad and 'valid'.
    `padding='same'` is TF's 'same', as timm's.
    """
    if padding == "same":
        return 0, "same"
    pad = ((stride - 1) + (kernel_size - 1)) // 2
    if stride == 1 and 2 * pad == kernel_size - 1:
        return 0, "same"
    return pad, "valid"


def conv2d(filters, kernel_size, name, stride=1, padding="", use_bias=False, groups=1, dtype=None):
    """A timm-padded conv: returns a list of layers (an optional ZeroPadding2D, then the conv).

    `groups == filters` (and == input channels) gives a DepthwiseConv2D."""
    pad, mode = timm_padding(kernel_size, stride, padding)
    out = [layers.ZeroPadding2D(pad, name=f"{name}_pad", dtype=dtype)] if pad else []
    if groups > 1 and groups == filters:
        out.append(layers.DepthwiseConv2D(kernel_size, strides=stride, padding=mode, use_bias=use_bias,
                                          name=name, dtype=dtype))
    else:
        out.append(layers.Conv2D(filters, kernel_size, strides=stride, padding=mode, use_bias=use_bias,
                                 groups=groups, name=name, dtype=dtype))
    return out


def conv_norm(conv_layers, norm, x, training=None):
    """norm(conv(x)) for a bias-free conv followed by a BatchNorm. At inference the norm is folded into the
    conv's kernel and a bias (one pass over the activations fewer); in training, or when the two run in
    different dtypes (mixed precision), the layers run as they are. Same result either way."""
    conv = conv_layers[-1]
    foldable = (isinstance(norm, layers.BatchNormalization) and not conv.use_bias and norm.center and norm.scale
                and norm.compute_dtype == conv.compute_dtype and getattr(conv, "groups", 1) == 1)
    if training or not foldable or not conv.built or not norm.built:
        return norm(apply(conv_layers, x))
    x = apply(conv_layers[:-1], x)  # explicit padding, if any
    scale, shift = batchnorm_affine(norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance, norm.epsilon)
    if isinstance(conv, layers.DepthwiseConv2D):
        y = ops.depthwise_conv(x, conv.kernel * scale[:, None], conv.strides, conv.padding)
    else:
        y = ops.conv(x, conv.kernel * scale, conv.strides, conv.padding)
    return y + shift


def apply(layer_list, x):
    """Applies a list of layers in order (the training flag reaches them through Keras' call context)."""
    for layer in layer_list:
        x = layer(x)
    return x


def freeze_sublayers_if_frozen(layer):
    """Call at the end of `build` in a layer that has sub-layers. A layer re-created with `trainable=False`
    (a saved frozen layer) gets it as a constructor argument, which reaches only its own variables; this
    passes it on to the sub-layers, which the model would otherwise train. (`layer.trainable = False`
    cannot: on TensorFlow, assigning an attribute its current value skips the setter.)"""
    if not layer.trainable:
        for sub in _compat.sublayers(layer):
            sub.trainable = False


TRACE_SIDE = 64  # the map side `CompositeLayer.build` traces at where the size is only known at run time


class CompositeLayer(layers.Layer):
    """A layer made of sub-layers. `build` traces `call` symbolically, which builds every sub-layer with the
    right shapes; Keras calls `build` alone when it re-creates a saved model from its config.

    A run-time (None) height or width is traced at `TRACE_SIDE`: no weight depends on it, and JAX's symbolic
    shapes cannot tell that a strided conv's floor((n - 1) / 2) + 1 equals a ceil-mode pool's ceil(n / 2)."""

    def build(self, input_shape):
        shape = tuple(TRACE_SIDE if n is None and i in (1, 2) else n for i, n in enumerate(input_shape))
        _compat.compute_output_spec(self.call, keras.KerasTensor(shape, dtype=self.compute_dtype))
        freeze_sublayers_if_frozen(self)


def _avg3_count_scale(h, w):
    """[1, ceil(H/2), ceil(W/2), 1] factors turning a zero-padded 3x3/2 average into one over the valid cells."""
    ones = np.pad(np.ones((h, w), "float32"), 1)
    count = np.array([[ones[i:i + 3, j:j + 3].sum() for j in range(0, w, 2)] for i in range(0, h, 2)])
    return (9.0 / count)[None, :, :, None].astype("float32")


def halved(n, ceil):
    """A side of n after a 2x downsampling: its ceiling (every cell covered) or floor; None stays None."""
    return None if n is None else (n + 1) // 2 if ceil else n // 2


@keras.saving.register_keras_serializable(package=PACKAGE)
class Pool2d(layers.Layer):
    """timm's 2x downsampling pools on NHWC: 'avg2'/'max2' (2x2, stride 2), and 'avg'/'max' (3x3, stride 2,
    symmetric padding 1; the 3x3 average excludes the padding from its count, the max pads with -inf).

    [B, H, W, C] -> [B, H', W', C]. 'avg'/'max' give H' = ceil(H/2). 'avg2'/'max2' give floor(H/2), as timm's
    `nn.AvgPool2d(2)` (the last row of an odd map is dropped), or with `ceil_mode` ceil(H/2): an odd map's last
    row is pooled alone (padding not counted, as PyTorch's `ceil_mode=True`). Even sizes: the same either way.
    With `padding='same'` (timm's `AvgPool2dSame` / `MaxPool2dSame`) they give ceil(H/2), an odd side padded at
    its end with a zero that the average counts (-inf for the max)."""

    def __init__(self, pool_type="avg2", padding="", ceil_mode=False, **kwargs):
        super().__init__(**kwargs)
        self.pool_type, self.padding, self.ceil_mode = pool_type, padding, ceil_mode

    def call(self, x):
        if self.pool_type in ("avg2", "max2"):
            fn = ops.average_pool if self.pool_type == "avg2" else ops.max_pool
            if self.padding == "same" and self.pool_type == "avg2":  # timm's AvgPool2dSame: the zero counts
                h, w = ops.shape(x)[1:3]
                return fn(ops.pad(x, [[0, 0], [0, h % 2], [0, w % 2], [0, 0]]), 2, 2, padding="valid")
            if self.padding == "same":  # timm's MaxPool2dSame pads with -inf: TF's 'same'
                return fn(x, 2, 2, padding="same")
            h, w = x.shape[1:3]
            # 'same' pads an odd side at its end and leaves the padding out of the average; on even sizes
            # 'valid' is the same pool (and today's graph).
            odd = self.ceil_mode and (h is None or w is None or h % 2 or w % 2)
            return fn(x, 2, 2, padding="same" if odd else "valid")
        if self.padding == "same":
            fn = ops.average_pool if self.pool_type == "avg" else ops.max_pool
            return fn(x, 3, 2, padding="same")
        pads = [[0, 0], [1, 1], [1, 1], [0, 0]]
        if self.pool_type == "max":
            x = ops.pad(x, pads, constant_values=float("-inf"))
            return ops.max_pool(x, 3, 2, padding="valid")
        h, w = x.shape[1:3]
        if h is not None and w is not None:
            scale = ops.cast(_avg3_count_scale(h, w), x.dtype)
        else:  # the same factors, from a pool of ones (sizes known only at run time)
            ones = ops.ones_like(x[..., :1])
            scale = 1.0 / ops.average_pool(ops.pad(ones, pads), 3, 2, padding="valid")
        summed = ops.average_pool(ops.pad(x, pads), 3, 2, padding="valid")
        return summed * ops.cast(scale, summed.dtype)

    def compute_output_shape(self, shape):
        ceil = self.ceil_mode or self.padding == "same" or self.pool_type in ("avg", "max")
        return (shape[0], halved(shape[1], ceil), halved(shape[2], ceil), shape[3])

    def get_config(self):
        return {**super().get_config(), "pool_type": self.pool_type, "padding": self.padding,
                "ceil_mode": self.ceil_mode}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Downsample2d(layers.Layer):
    """timm's Downsample2d: optional 2x pool (`Pool2d`, with its `ceil_mode`), then a 1x1 conv `expand` when the
    width changes. [B, H, W, in] -> [B, H/2, W/2, out] (or [B, H, W, out] with `pool_type=None`)."""

    def __init__(self, out_dim, pool_type="avg2", use_bias=True, padding="", ceil_mode=False, **kwargs):
        super().__init__(**kwargs)
        self.out_dim, self.pool_type, self.use_bias, self.padding = out_dim, pool_type, use_bias, padding
        self.ceil_mode = ceil_mode
        self.pool = Pool2d(pool_type, padding, ceil_mode, name="pool", dtype=self.dtype_policy) if pool_type else None
        self.expand = None

    def build(self, shape):
        if shape[-1] != self.out_dim:
            self.expand = layers.Conv2D(self.out_dim, 1, use_bias=self.use_bias, name="expand",
                                        dtype=self.dtype_policy)
            self.expand.build(shape)
        freeze_sublayers_if_frozen(self)

    def call(self, x):
        if self.pool is not None:
            x = self.pool(x)
        return self.expand(x) if self.expand is not None else x

    def compute_output_shape(self, shape):
        if self.pool is not None:
            shape = self.pool.compute_output_shape(shape)
        return (*shape[:-1], self.out_dim)

    def get_config(self):
        return {**super().get_config(), "out_dim": self.out_dim, "pool_type": self.pool_type,
                "use_bias": self.use_bias, "padding": self.padding, "ceil_mode": self.ceil_mode}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DropPath(layers.Layer):
    """Stochastic depth: in training, zeroes a sample's residual branch with probability `rate` and scales the
    kept ones by 1/(1-rate). Identity at inference. Any shape [B, ...]."""

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = float(rate), seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x * mask / keep

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LayerScale(layers.Layer):
    """Per-channel learned scale `gamma` (timm LayerScale2d). [B, H, W, C] -> same."""

    def __init__(self, init_values=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_values = init_values

    def build(self, shape):
        self.gamma = self.add_weight(name="gamma", shape=(shape[-1],),
                                     initializer=keras.initializers.Constant(self.init_values))

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def compute_output_shape(self, shape):
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "init_values": self.init_values}
