"""Pre-norm Transformer block with relative attention and 2x downsampling, as timm's `TransformerBlock2d`."""

import keras
from keras import layers

from keras_coatnet.layers.attention import RelativeAttention2d
from keras_coatnet.layers.common import (
    PACKAGE,
    CompositeLayer,
    Downsample2d,
    DropPath,
    LayerScale,
    Pool2d,
    activation,
    halved,
    norm_layer,
)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerBlock(CompositeLayer):
    """x = shortcut(x) + attn(norm1(x)); x = x + mlp(norm2(x)), with optional layer scale and stochastic depth.

    With stride 2 the shortcut is a 2x pool then a 1x1 projection, and the attention branch pools after its
    norm (the paper's downsampling). A stride-1 block that changes width (CoAtNet-6/7 stage 3) projects the
    shortcut with a 1x1 conv.

    Args:
        in_dim, out_dim: channels. stride: 1 or 2. size: (H, W) of the output map the relative bias table is
        trained for (the block runs at any size). cfg: a resolved timm `transformer_cfg` dict. drop_path: rate.
    Input [B, H, W, in_dim] -> [B, ceil(H/stride), ceil(W/stride), out_dim]: both 2x pools are in `ceil_mode`
    (on even sides timm's pools; timm cannot run an odd map into attention, its bias is made for the ceiling).

    `cfg["head_first"]` is ignored, as in timm's TransformerBlock2d: its qkv layout is always heads-first.
    """

    def __init__(self, in_dim, out_dim, stride=1, size=(7, 7), cfg=None, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.in_dim, self.out_dim, self.stride, self.size = in_dim, out_dim, stride, tuple(size)
        self.cfg, self.drop_path_rate = cfg, drop_path
        c, dt = cfg, self.dtype_policy
        norm = lambda name: norm_layer(c["norm_layer"], c["norm_eps"], name, dt)
        self.shortcut = None
        if stride == 2 or in_dim != out_dim:
            self.shortcut = Downsample2d(out_dim, c["pool_type"] if stride == 2 else None, c["shortcut_bias"],
                                         ceil_mode=True, name="shortcut", dtype=dt)
        self.norm1 = norm("norm1__norm" if stride == 2 else "norm1")
        self.down = Pool2d(c["pool_type"], ceil_mode=True, name="norm1__down", dtype=dt) if stride == 2 else None
        self.attn = RelativeAttention2d(
            in_dim, out_dim, self.size, dim_head=c["dim_head"], expand_first=c["expand_first"],
            head_first=True, use_bias=c["attn_bias"], rel_pos_type=c["rel_pos_type"],
            rel_pos_dim=c["rel_pos_dim"], attn_drop=c["attn_drop"], proj_drop=c["proj_drop"], name="attn", dtype=dt)
        scale = lambda name: LayerScale(c["init_values"], name=name, dtype=dt) if c["init_values"] else None
        self.ls1, self.ls2 = scale("ls1"), scale("ls2")
        self.norm2 = norm("norm2")
        self.fc1 = layers.Conv2D(int(out_dim * c["expand_ratio"]), 1, name="mlp__fc1", dtype=dt)
        self.act = activation(c["act_layer"])
        self.mlp_drop = layers.Dropout(c["proj_drop"], name="mlp__drop", dtype=dt)
        self.fc2 = layers.Conv2D(out_dim, 1, name="mlp__fc2", dtype=dt)
        self.drop_path1 = DropPath(drop_path, name="drop_path1", dtype=dt)
        self.drop_path2 = DropPath(drop_path, name="drop_path2", dtype=dt)

    def call(self, x):
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        y = self.norm1(x)
        if self.down is not None:
            y = self.down(y)
        y = self.attn(y)
        if self.ls1 is not None:
            y = self.ls1(y)
        x = shortcut + self.drop_path1(y)
        y = self.fc2(self.mlp_drop(self.act(self.fc1(self.norm2(x)))))
        if self.ls2 is not None:
            y = self.ls2(y)
        return x + self.drop_path2(y)

    def compute_output_shape(self, shape):
        if self.stride == 1:
            return (*shape[:-1], self.out_dim)
        return (shape[0], halved(shape[1], True), halved(shape[2], True), self.out_dim)

    def get_config(self):
        return {**super().get_config(), "in_dim": self.in_dim, "out_dim": self.out_dim, "stride": self.stride,
                "size": self.size, "cfg": self.cfg, "drop_path": self.drop_path_rate}
