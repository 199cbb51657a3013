"""Weights folded for inference, as NumPy: norms into the convs / matmuls next to them.

Every fold is exact algebra on the trained weights (float64 arithmetic, float32 result), so the export
graph computes the same function as the Keras model with fewer ops.
"""

import dataclasses

import numpy as np
import tensorflow as tf
from keras import layers


def numpy(v):
    """A Keras variable / tensor as a float64 NumPy array (also inside a tf.function being traced)."""
    with tf.init_scope():
        return np.asarray(tf.convert_to_tensor(getattr(v, "value", v)).numpy(), np.float64)


def norm_affine(norm):
    """(scale [C], shift [C]) with norm(x) == normalize(x) * scale + shift for LayerNormalization, or
    == x * scale + shift for BatchNormalization (inference)."""
    gamma = numpy(norm.gamma) if getattr(norm, "scale", True) else 1.0
    beta = numpy(norm.beta) if getattr(norm, "center", True) else 0.0
    if isinstance(norm, layers.BatchNormalization):
        scale = gamma / np.sqrt(numpy(norm.moving_variance) + norm.epsilon)
        return scale, beta - numpy(norm.moving_mean) * scale
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
        kernel = numpy(conv.kernel)
        n_out = kernel.shape[2] if isinstance(conv, layers.DepthwiseConv2D) else kernel.shape[3]
        bias = numpy(conv.bias) if conv.use_bias else np.zeros(n_out)
        if getattr(conv, "groups", 1) != 1:
            raise ValueError(f"grouped conv {conv.name} (groups={conv.groups}) is not supported by the export view")
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
