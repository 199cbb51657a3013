"""The CoAtNet stem (the paper's S0): two 3x3 convs, the first with stride 2, as timm's `Stem`. NHWC."""

import keras

from keras_coatnet.layers import export_form
from keras_coatnet.layers.common import PACKAGE, CompositeLayer, activation, apply, conv2d, conv_norm, make_norm
from keras_coatnet.layers.folding import norm_affine


@keras.saving.register_keras_serializable(package=PACKAGE)
class Stem(CompositeLayer):
    """conv1 (3x3, stride 2) -> norm1 + act -> conv2 (3x3). [B, H, W, C] -> [B, H/2, W/2, widths[1]].

    Args:
        widths: (conv1 width, conv2 width). use_bias: conv biases. act_layer, norm_layer, norm_eps, padding:
        taken from timm's `conv_cfg`, as timm does.
    """

    def __init__(self, widths, use_bias=False, act_layer="gelu", norm_layer="batchnorm2d", norm_eps=1e-5,
                 padding="", **kwargs):
        super().__init__(**kwargs)
        self.widths, self.use_bias, self.act_layer = tuple(widths), use_bias, act_layer
        self.norm_layer, self.norm_eps, self.padding = norm_layer, norm_eps, padding
        dt = self.dtype_policy
        self.conv1 = conv2d(self.widths[0], 3, "conv1", stride=2, padding=padding, use_bias=use_bias, dtype=dt)
        self.norm1 = make_norm(norm_layer, norm_eps, "norm1", dt)
        self.act = activation(act_layer)
        self.conv2 = conv2d(self.widths[1], 3, "conv2", padding=padding, use_bias=use_bias, dtype=dt)

    def call(self, x, training=None):
        return apply(self.conv2, self.act(conv_norm(self.conv1, self.norm1, x, training)))

    def export_call(self, x, options):
        """`call` at inference as a TFLite-friendly TF graph (`export_form`): norm1 folded into conv1."""
        if export_form.is_layernorm(self.norm1):
            raise ValueError("a LayerNorm stem has no export form")
        x = export_form.padded_conv(self.conv1, x, norm_affine(self.norm1))
        x = export_form.activation(self.act_layer, options)(x)
        return export_form.padded_conv(self.conv2, x)

    def compute_output_shape(self, shape):
        half = lambda n: None if n is None else (n + 1) // 2
        return (shape[0], half(shape[1]), half(shape[2]), self.widths[1])

    def get_config(self):
        return {**super().get_config(), "widths": self.widths, "use_bias": self.use_bias,
                "act_layer": self.act_layer, "norm_layer": self.norm_layer, "norm_eps": self.norm_eps,
                "padding": self.padding}
