"""Weights folded for inference: norms into the convs / matmuls next to them, as NumPy (float64 arithmetic).

Every fold is exact algebra on the trained weights, so an export form (`export_call`) computes the same
function as the block's `call` with fewer ops. `batchnorm_affine` is the one BatchNorm fold: `conv_norm` uses it
on tensors at inference, the export forms on NumPy arrays.
"""

import dataclasses

import keras
import numpy as np
from keras import layers, ops


def evaluate(fn):
    """fn() (a tensor) as a float64 NumPy array, computed eagerly, also while a TensorFlow function is being
    traced (the variables' current values)."""
    if keras.backend.backend() != "tensorflow":
        return np.asarray(ops.convert_to_numpy(fn()), np.float64)
    import tensorflow as tf

    with tf.init_scope():
        return np.asarray(tf.convert_to_tensor(fn()).numpy(), np.float64)


def to_numpy(v):
    """A Keras variable / tensor as a float64 NumPy array (see `evaluate`)."""
    return evaluate(lambda: getattr(v, "value", v))


def batchnorm_affine(gamma, beta, moving_mean, moving_variance, epsilon):
    """(scale, shift) with a BatchNorm at inference computing x * scale + shift; NumPy arrays or backend tensors [C]."""
    scale = gamma * (moving_variance + epsilon) ** -0.5
    return scale, beta - moving_mean * scale


def norm_affine(norm):
    """(scale [C], shift [C]) float64 with norm(x) == standardize(x) * scale + shift for a LayerNormalization,
    or == x * scale + shift for a BatchNormalization (inference)."""
    gamma = to_numpy(norm.gamma) if getattr(norm, "scale", True) else 1.0
    beta = to_numpy(norm.beta) if getattr(norm, "center", True) else 0.0
    if isinstance(norm, layers.BatchNormalization):
        return batchnorm_affine(gamma, beta, to_numpy(norm.moving_mean), to_numpy(norm.moving_variance),
                                norm.epsilon)
    c = norm.gamma.shape[0] if getattr(norm, "scale", True) else norm.beta.shape[0]
    return np.broadcast_to(gamma, (c,)).copy(), np.broadcast_to(beta, (c,)).copy()


@dataclasses.dataclass
class Conv:
    """A conv with folded weights: kernel [kh, kw, Cin, Cout] (depthwise: [kh, kw, C, 1]), bias [Cout]."""

    kernel: np.ndarray
    bias: np.ndarray
    strides: int
    padding: str
    depthwise: bool

    @classmethod
    def from_layer(cls, conv):
        """The weights of a keras Conv2D / DepthwiseConv2D (groups 1)."""
        kernel = to_numpy(conv.kernel)
        n_out = kernel.shape[2] if isinstance(conv, layers.DepthwiseConv2D) else kernel.shape[3]
        bias = to_numpy(conv.bias) if conv.use_bias else np.zeros(n_out)
        if getattr(conv, "groups", 1) != 1:
            raise ValueError(f"grouped conv {conv.name} (groups={conv.groups}) has no export form")
        return cls(kernel, bias, conv.strides[0], conv.padding.upper(), isinstance(conv, layers.DepthwiseConv2D))

    def scale_output(self, scale, shift=0.0):
        """Folds y -> y * scale + shift (per output channel) into the conv."""
        if self.depthwise:
            self.kernel = self.kernel * scale[None, None, :, None]
        else:
            self.kernel = self.kernel * scale
        self.bias = self.bias * scale + shift
        return self

    def scale_input(self, scale, shift):
        """Folds x -> x * scale + shift (per input channel) into a 1x1 conv: exact only without padding."""
        if self.kernel.shape[:2] != (1, 1) or self.depthwise:
            raise ValueError("input folding needs a 1x1 (non-depthwise) conv")
        w = self.kernel[0, 0]  # [Cin, Cout]
        self.bias = self.bias + shift @ w
        self.kernel = (w * scale[:, None])[None, None]
        return self

    def as_matrix(self):
        """A 1x1 conv as a Linear."""
        return Linear(self.kernel[0, 0].copy(), self.bias.copy())


@dataclasses.dataclass
class Linear:
    """y = x @ w + b with w [Cin, Cout], b [Cout]; a 1x1 conv or a Dense."""

    w: np.ndarray
    b: np.ndarray

    def scale_input(self, scale, shift):
        """Folds x -> x * scale + shift (per input channel)."""
        self.b = self.b + shift @ self.w
        self.w = self.w * scale[:, None]
        return self

    def scale_output(self, scale, shift=0.0):
        """Folds y -> y * scale + shift (per output channel)."""
        self.w = self.w * scale
        self.b = self.b * scale + shift
        return self

    def columns(self, index):
        """A Linear of the output columns ``index`` (in that order)."""
        return Linear(self.w[:, index], self.b[index])
