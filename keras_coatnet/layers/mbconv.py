"""MBConv block (pre-norm inverted bottleneck with squeeze-excitation), as timm's `MbConvBlock`. NHWC."""

import keras
from keras import layers, ops

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
    norm_layer,
)


def make_divisible(v, divisor=8, round_limit=0.9):
    """Rounds a width to a multiple of `divisor`, never dropping more than 10% (timm's rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


def halves_to_ceiling(conv_cfg):
    """Whether a stride-2 MBConv of this timm `conv_cfg` halves an odd side to its ceiling: a strided conv does
    ('dw', '1x1'), and so does a 'same'-padded pool; timm's plain 2x2 pool ('pool') floors it."""
    return conv_cfg["stride_mode"] != "pool" or conv_cfg["padding"] == "same"


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

    def compute_output_shape(self, shape):
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "reduced_dim": self.reduced_dim, "act_layer": self.act_layer}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MBConvBlock(CompositeLayer):
    """Pre-norm MBConv: shortcut + conv3_1x1(SE(dw_kxk(conv1_1x1(norm(x))))), timm `MbConvBlock` numerics.

    Args:
        in_dim, out_dim: input and output channels. stride: 1 or 2 (2 halves H and W).
        cfg: a resolved timm `conv_cfg` dict (see `config.resolve_config`). drop_path: stochastic depth rate.
    Input [B, H, W, in_dim] -> [B, H/stride, W/stride, out_dim]. With stride 2 an odd side halves as timm's
    main path does: to its floor when it downsamples by a pool (`stride_mode='pool'`), to its ceiling by a strided
    conv ('dw', '1x1'), whose shortcut then pools in `ceil_mode` (timm's floor pool there cannot add up with
    the conv's output, and timm refuses such sizes).
    """

    def __init__(self, in_dim, out_dim, stride=1, cfg=None, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.in_dim, self.out_dim, self.stride, self.cfg, self.drop_path_rate = in_dim, out_dim, stride, cfg, drop_path
        c, dt = cfg, self.dtype_policy
        mid = make_divisible((out_dim if c["expand_output"] else in_dim) * c["expand_ratio"])
        self.act = activation(c["act_layer"])
        self.pre_norm_act = c["pre_norm_act"]
        self.shortcut = None
        self.ceil_mode = halves_to_ceiling(c)
        if stride == 2 or in_dim != out_dim:
            self.shortcut = Downsample2d(out_dim, c["pool_type"] if stride == 2 else None, c["output_bias"],
                                         c["padding"], ceil_mode=self.ceil_mode, name="shortcut", dtype=dt)
        stride_pool = stride if c["stride_mode"] == "pool" else 1
        stride_1 = stride if c["stride_mode"] == "1x1" else 1
        stride_2 = stride if c["stride_mode"] == "dw" else 1
        norm = lambda name: norm_layer(c["norm_layer"], c["norm_eps"], name, dt)
        self.pre_norm = norm("pre_norm")
        self.down = Pool2d(c["downsample_pool_type"], c["padding"], name="down", dtype=dt) if stride_pool > 1 else None
        self.conv1_1x1 = conv2d(mid, 1, "conv1_1x1", stride=stride_1, dtype=dt)
        self.norm1 = norm("norm1")
        groups = mid // c["group_size"] if c["group_size"] else 1
        self.conv2_kxk = conv2d(mid, c["kernel_size"], "conv2_kxk", stride=stride_2, padding=c["padding"],
                                groups=groups, dtype=dt)
        se = None
        if c["attn_layer"] == "se":
            rd = int(c["attn_ratio"] * (out_dim if c["expand_output"] else mid))
            se = SqueezeExcite(rd, c["attn_act_layer"], name="se_early" if c["attn_early"] else "se", dtype=dt)
        self.se_early, self.se = (se, None) if c["attn_early"] else (None, se)
        self.norm2 = norm("norm2")
        self.conv3_1x1 = conv2d(out_dim, 1, "conv3_1x1", use_bias=c["output_bias"], dtype=dt)
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

    def compute_output_shape(self, shape):
        if self.stride == 1:
            return (*shape[:-1], self.out_dim)
        return (shape[0], halved(shape[1], self.ceil_mode), halved(shape[2], self.ceil_mode), self.out_dim)

    def get_config(self):
        return {**super().get_config(), "in_dim": self.in_dim, "out_dim": self.out_dim, "stride": self.stride,
                "cfg": self.cfg, "drop_path": self.drop_path_rate}
