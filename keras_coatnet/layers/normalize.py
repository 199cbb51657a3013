"""The input normalization layer: raw 0-255 values -> (x / 255 - mean) / std per channel, NHWC."""

import keras
import numpy as np
from keras import layers, ops

from keras_coatnet.config import TIMM_MEAN, TIMM_STD
from keras_coatnet.layers.common import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class Normalize(layers.Layer):
    """Maps raw 0-255 values to (x / 255 - mean) / std per channel. [..., C] -> [..., C], C = len(mean)."""

    def __init__(self, mean=TIMM_MEAN, std=TIMM_STD, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def call(self, x):
        scale = np.array([1.0 / (255.0 * s) for s in self.std], "float32")
        offset = np.array([-m / s for m, s in zip(self.mean, self.std)], "float32")
        return x * ops.cast(scale, x.dtype) + ops.cast(offset, x.dtype)

    def compute_output_shape(self, shape):
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}
