"""CoAtNet layers (Keras 3, `keras.ops`, NHWC; BatchNorm adds a fused TensorFlow kernel for training). Importing
this module registers them for serialization."""

from keras_coatnet.layers.attention import RelativeAttention2d, RelativePositionBias
from keras_coatnet.layers.common import BatchNorm, Downsample2d, DropPath, LayerScale, Pool2d
from keras_coatnet.layers.mbconv import MBConvBlock, SqueezeExcite
from keras_coatnet.layers.normalize import Normalize
from keras_coatnet.layers.stem import Stem
from keras_coatnet.layers.transformer import TransformerBlock

__all__ = ["RelativeAttention2d", "RelativePositionBias", "BatchNorm", "Downsample2d", "DropPath", "LayerScale",
           "Pool2d", "MBConvBlock", "Normalize", "SqueezeExcite", "Stem", "TransformerBlock"]
