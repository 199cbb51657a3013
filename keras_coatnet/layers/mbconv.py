"""MBConv block (pre-norm inverted bottleneck with squeeze-excitation), as timm's `MbConvBlock`. NHWC."""

import keras
from keras import layers, ops

from keras_coatnet.layers import export_form
from keras_coatnet.layers.common import (
    PACKAGE,
    CompositeLayer,
    Downsample2d,
    DropPath,
    Pool2d,
    activation,
    apply,
    conv2d,
    conv_norm,
    freeze_sublayers_if_frozen,
    halved,
    make_norm,
)
from keras_coatnet.layers.folding import Conv, norm_affine


def make_divisible(v, divisor=8, round_limit=0.9):
    """Rounds a width to a multiple of `divisor`, never dropping more than 10% (timm's rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


def halves_to_ceiling(stride_mode, padding):
    """Whether a stride-2 MBConv halves an odd side to its ceiling: a strided conv does (`stride_mode` 'dw',
    '1x1'), and so does a 'same'-padded pool; timm's plain 2x2 pool ('pool') floors it."""
    return stride_mode != "pool" or padding == "same"


@keras.saving.register_keras_serializable(package=PACKAGE)
class SqueezeExcite(layers.Layer):
    """x * sigmoid(fc2(act(fc1(mean_hw(x))))). [B, H, W, C] -> [B, H, W, C]; fc1/fc2 are 1x1 convs with bias."""

    def __init__(self, reduced_dim, act_layer="silu", **kwargs):
        super().__init__(**kwargs)
        self.reduced_dim, self.act_layer = reduced_dim, act_layer
        self.act = activation(act_layer)
        self.fc1 = layers.Conv2D(reduced_dim, 1, name="fc1", dtype=self.dtype_policy)
        self.fc2 = None

    def build(self, shape):
        self.fc1.build((None, 1, 1, shape[-1]))
        self.fc2 = layers.Conv2D(shape[-1], 1, name="fc2", dtype=self.dtype_policy)
        self.fc2.build((None, 1, 1, self.reduced_dim))
        freeze_sublayers_if_frozen(self)

    def call(self, x):
        s = ops.mean(x, axis=(1, 2), keepdims=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * ops.sigmoid(s)

    def export_call(self, x, options):
        """`call` as a TF graph of constants (`export_form`); NHWC x [1, H, W, C]."""
        t = export_form.tf()
        s = t.reduce_mean(x, axis=(1, 2), keepdims=True)
        s = export_form.conv(Conv.from_layer(self.fc1), s)
        s = export_form.conv(Conv.from_layer(self.fc2), export_form.activation(self.act_layer, options)(s))
        return x * t.sigmoid(s)

    def compute_output_shape(self, shape):
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "reduced_dim": self.reduced_dim, "act_layer": self.act_layer}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MBConvBlock(CompositeLayer):
    """Pre-norm MBConv: shortcut + conv3_1x1(SE(dw_kxk(conv1_1x1(norm(x))))), timm `MbConvBlock` numerics.

    Input [B, H, W, in_dim] -> [B, H/stride, W/stride, out_dim]. With stride 2 an odd side halves as timm's main
    path does: to its floor when it downsamples by a pool (`stride_mode='pool'`), to its ceiling by a strided conv
    ('dw', '1x1'), whose shortcut then pools in `ceil_mode` (timm's floor pool there cannot add up with the conv's
    output, and timm refuses such sizes).

    Args (timm's `MaxxVitConvCfg` names and defaults; `config.CONV_DEFAULTS`):
        in_dim, out_dim: input and output channels. stride: 1 or 2.
        expand_ratio: inner width = expand_ratio * (out_dim if expand_output else in_dim), rounded to 8.
        kernel_size: of the depthwise conv. group_size: channels per group of that conv (1: depthwise).
        pre_norm_act: activation after the pre-norm. output_bias: bias of conv3_1x1 and the shortcut projection.
        stride_mode: where stride 2 happens: 'pool' (a `downsample_pool_type` pool first), '1x1', 'dw'.
        pool_type: the shortcut's 2x pool. padding: '' (timm's symmetric) or 'same' (TF's).
        attn_layer: 'se' or None. attn_early: SE between the depthwise conv and its norm.
        attn_act_layer, attn_ratio: the SE's activation and width ratio. act_layer: the block's activation.
        norm_layer, norm_eps: 'batchnorm2d' / 'layernorm2d' and epsilon. drop_path: stochastic depth rate.
    """

    ARGS = ("expand_ratio", "expand_output", "kernel_size", "group_size", "pre_norm_act", "output_bias",
            "stride_mode", "pool_type", "downsample_pool_type", "padding", "attn_layer", "attn_early",
            "attn_act_layer", "attn_ratio", "act_layer", "norm_layer", "norm_eps")

    def __init__(self, in_dim, out_dim, stride=1, *, expand_ratio=4.0, expand_output=True, kernel_size=3,
                 group_size=1, pre_norm_act=False, output_bias=True, stride_mode="dw", pool_type="avg2",
                 downsample_pool_type="avg2", padding="", attn_layer="se", attn_early=False, attn_act_layer="silu",
                 attn_ratio=0.25, act_layer="gelu", norm_layer="batchnorm2d", norm_eps=1e-5, drop_path=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.in_dim, self.out_dim, self.stride, self.drop_path_rate = in_dim, out_dim, stride, drop_path
        self.expand_ratio, self.expand_output, self.kernel_size = expand_ratio, expand_output, kernel_size
        self.group_size, self.pre_norm_act, self.output_bias = group_size, pre_norm_act, output_bias
        self.stride_mode, self.pool_type, self.downsample_pool_type = stride_mode, pool_type, downsample_pool_type
        self.padding, self.attn_layer, self.attn_early = padding, attn_layer, attn_early
        self.attn_act_layer, self.attn_ratio, self.act_layer = attn_act_layer, attn_ratio, act_layer
        self.norm_layer, self.norm_eps = norm_layer, norm_eps
        dt = self.dtype_policy
        mid = make_divisible((out_dim if expand_output else in_dim) * expand_ratio)
        self.act = activation(act_layer)
        self.shortcut = None
        self.ceil_mode = halves_to_ceiling(stride_mode, padding)
        if stride == 2 or in_dim != out_dim:
            self.shortcut = Downsample2d(out_dim, pool_type if stride == 2 else None, output_bias, padding,
                                         ceil_mode=self.ceil_mode, name="shortcut", dtype=dt)
        stride_pool = stride if stride_mode == "pool" else 1
        stride_1 = stride if stride_mode == "1x1" else 1
        stride_2 = stride if stride_mode == "dw" else 1
        norm = lambda name: make_norm(norm_layer, norm_eps, name, dt)  # noqa: E731
        self.pre_norm = norm("pre_norm")
        self.down = Pool2d(downsample_pool_type, padding, name="down", dtype=dt) if stride_pool > 1 else None
        self.conv1_1x1 = conv2d(mid, 1, "conv1_1x1", stride=stride_1, dtype=dt)
        self.norm1 = norm("norm1")
        groups = mid // group_size if group_size else 1
        self.conv2_kxk = conv2d(mid, kernel_size, "conv2_kxk", stride=stride_2, padding=padding, groups=groups,
                                dtype=dt)
        se = None
        if attn_layer == "se":
            rd = int(attn_ratio * (out_dim if expand_output else mid))
            se = SqueezeExcite(rd, attn_act_layer, name="se_early" if attn_early else "se", dtype=dt)
        self.se_early, self.se = (se, None) if attn_early else (None, se)
        self.norm2 = norm("norm2")
        self.conv3_1x1 = conv2d(out_dim, 1, "conv3_1x1", use_bias=output_bias, dtype=dt)
        self.drop_path = DropPath(drop_path, name="drop_path", dtype=dt)

    def call(self, x, training=None):
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        x = self.pre_norm(x)
        if self.pre_norm_act:
            x = self.act(x)
        if self.down is not None:
            x = self.down(x)
        x = self.act(conv_norm(self.conv1_1x1, self.norm1, x, training))
        if self.se_early is not None:
            x = self.act(self.norm2(self.se_early(apply(self.conv2_kxk, x))))
        else:
            x = self.act(conv_norm(self.conv2_kxk, self.norm2, x, training))
        if self.se is not None:
            x = self.se(x)
        x = apply(self.conv3_1x1, x)
        return self.drop_path(x) + shortcut

    def export_call(self, x, options):
        """`call` at inference as a TFLite-friendly TF graph (`export_form`): the pre-norm folded into conv1_1x1
        (or applied before the activation with `pre_norm_act`), norm1 / norm2 into the convs before them."""
        if export_form.is_layernorm(self.pre_norm):
            raise ValueError("a LayerNorm MBConv has no export form")
        act = export_form.activation(self.act_layer, options)
        short = export_form.shortcut(self.shortcut, x)
        pre_scale, pre_shift = norm_affine(self.pre_norm)
        *pads1, last1 = self.conv1_1x1
        c1 = Conv.from_layer(last1)
        # An average pool is linear per channel, so the pre-norm's affine still folds into the 1x1 conv after it.
        linear_down = self.down is None or (self.down.pool_type in ("avg2", "avg") and self.down.padding != "same")
        if self.pre_norm_act or not linear_down:
            x = x * export_form.const(pre_scale) + export_form.const(pre_shift)
            x = act(x) if self.pre_norm_act else x
        else:
            c1.scale_input(pre_scale, pre_shift)
        if self.down is not None:
            x = export_form.pool(self.down, x)
        for pad in pads1:
            x = pad(x)
        x = act(export_form.conv(c1.scale_output(*norm_affine(self.norm1)), x))
        n2 = norm_affine(self.norm2)
        if self.se_early is None:
            x = export_form.padded_conv(self.conv2_kxk, x, n2)
        else:
            x = self.se_early.export_call(export_form.padded_conv(self.conv2_kxk, x), options)
            x = x * export_form.const(n2[0]) + export_form.const(n2[1])
        x = act(x)
        if self.se is not None:
            x = self.se.export_call(x, options)
        return export_form.padded_conv(self.conv3_1x1, x) + short

    def compute_output_shape(self, shape):
        if self.stride == 1:
            return (*shape[:-1], self.out_dim)
        return (shape[0], halved(shape[1], self.ceil_mode), halved(shape[2], self.ceil_mode), self.out_dim)

    def get_config(self):
        return {**super().get_config(), "in_dim": self.in_dim, "out_dim": self.out_dim, "stride": self.stride,
                **{name: getattr(self, name) for name in self.ARGS}, "drop_path": self.drop_path_rate}
