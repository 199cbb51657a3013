"""Pre-norm Transformer block with relative attention and 2x downsampling, as timm's `TransformerBlock2d`."""

import keras
from keras import layers

from keras_coatnet.layers import export_form
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
    make_norm,
)
from keras_coatnet.layers.folding import Conv, to_numpy


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerBlock(CompositeLayer):
    """x = shortcut(x) + attn(norm1(x)); x = x + mlp(norm2(x)), with optional layer scale and stochastic depth.

    With stride 2 the shortcut is a 2x pool then a 1x1 projection, and the attention branch pools after its norm
    (the paper's downsampling). A stride-1 block that changes width (CoAtNet-6/7 stage 3) projects the shortcut
    with a 1x1 conv. Input [B, H, W, in_dim] -> [B, ceil(H/stride), ceil(W/stride), out_dim]: both 2x pools are in
    `ceil_mode` (on even sides timm's pools; timm cannot run an odd map into attention, its bias is made for the
    ceiling). timm's qkv layout is heads-first here (its TransformerBlock2d ignores `head_first`).

    Args (timm's `MaxxVitTransformerCfg` names and defaults; `config.TRANSFORMER_DEFAULTS`):
        in_dim, out_dim: channels. stride: 1 or 2. size: (H, W) of the output map the relative bias table is
        trained for (the block runs at any size).
        dim_head: channels per head. expand_first: attention width out_dim (else in_dim). attn_bias: qkv / proj
        biases. shortcut_bias: the shortcut projection's bias. pool_type: the 2x pools.
        rel_pos_type, rel_pos_dim: 'bias', 'bias_tf', 'mlp' (hidden width rel_pos_dim) or None.
        attn_drop, proj_drop: dropout rates. init_values: layer scale init (None: no layer scale).
        expand_ratio, act_layer: the MLP's width ratio and activation. norm_layer, norm_eps: the two norms.
        drop_path: stochastic depth rate.
    """

    ARGS = ("dim_head", "expand_first", "attn_bias", "shortcut_bias", "pool_type", "rel_pos_type", "rel_pos_dim",
            "attn_drop", "proj_drop", "init_values", "expand_ratio", "act_layer", "norm_layer", "norm_eps")

    def __init__(self, in_dim, out_dim, stride=1, size=(7, 7), *, dim_head=32, expand_first=True, attn_bias=True,
                 shortcut_bias=True, pool_type="avg2", rel_pos_type="bias", rel_pos_dim=512, attn_drop=0.0,
                 proj_drop=0.0, init_values=None, expand_ratio=4.0, act_layer="gelu", norm_layer="layernorm2d",
                 norm_eps=1e-6, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.in_dim, self.out_dim, self.stride, self.size = in_dim, out_dim, stride, tuple(size)
        self.dim_head, self.expand_first, self.attn_bias, self.shortcut_bias = (dim_head, expand_first, attn_bias,
                                                                                shortcut_bias)
        self.pool_type, self.rel_pos_type, self.rel_pos_dim = pool_type, rel_pos_type, rel_pos_dim
        self.attn_drop, self.proj_drop, self.init_values = attn_drop, proj_drop, init_values
        self.expand_ratio, self.act_layer, self.norm_layer, self.norm_eps = expand_ratio, act_layer, norm_layer, norm_eps
        self.drop_path_rate = drop_path
        dt = self.dtype_policy
        norm = lambda name: make_norm(norm_layer, norm_eps, name, dt)  # noqa: E731
        self.shortcut = None
        if stride == 2 or in_dim != out_dim:
            self.shortcut = Downsample2d(out_dim, pool_type if stride == 2 else None, shortcut_bias,
                                         ceil_mode=True, name="shortcut", dtype=dt)
        self.norm1 = norm("norm1__norm" if stride == 2 else "norm1")
        self.down = Pool2d(pool_type, ceil_mode=True, name="norm1__down", dtype=dt) if stride == 2 else None
        self.attn = RelativeAttention2d(
            in_dim, out_dim, self.size, dim_head=dim_head, expand_first=expand_first, head_first=True,
            use_bias=attn_bias, rel_pos_type=rel_pos_type, rel_pos_dim=rel_pos_dim, attn_drop=attn_drop,
            proj_drop=proj_drop, name="attn", dtype=dt)
        scale = lambda name: LayerScale(init_values, name=name, dtype=dt) if init_values else None  # noqa: E731
        self.ls1, self.ls2 = scale("ls1"), scale("ls2")
        self.norm2 = norm("norm2")
        self.fc1 = layers.Conv2D(int(out_dim * expand_ratio), 1, name="mlp__fc1", dtype=dt)
        self.act = activation(act_layer)
        self.mlp_drop = layers.Dropout(proj_drop, name="mlp__drop", dtype=dt)
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

    def export_call(self, x, options):
        """`call` at inference as a TFLite-friendly TF graph (`export_form`) on NHWC x [1, H, W, in_dim]: the
        block runs on 2-D [tokens, channels] (every 1x1 conv a FULLY_CONNECTED), norm affines, layer scales and
        1/sqrt(d) folded into the matmuls, the relative bias a constant or expanded from its table."""
        tf = export_form.tf()
        short = export_form.shortcut(self.shortcut, x)
        y, s1, t1 = export_form.norm_then(self.norm1, x)
        if self.down is not None:
            y = export_form.pool(self.down, y)  # an average pool is linear per channel: the affine still folds
        h, w = y.shape[1:3]
        n = h * w
        gamma = lambda ls: None if ls is None else to_numpy(ls.gamma)  # noqa: E731
        attn = self.attn.export_call(tf.reshape(y, (n, y.shape[-1])), (h, w), options, (s1, t1), gamma(self.ls1))
        x2d = tf.reshape(short, (n, self.out_dim)) + attn

        z, s2, t2 = export_form.norm_then(self.norm2, x2d)
        fc1 = Conv.from_layer(self.fc1).as_matrix().scale_input(s2, t2)
        fc2 = Conv.from_layer(self.fc2).as_matrix()
        if self.ls2 is not None:
            fc2.scale_output(gamma(self.ls2))
        z = export_form.linear(fc2, export_form.activation(self.act_layer, options)(export_form.linear(fc1, z)))
        shape = (1, h, w, self.out_dim)  # add after reshaping: a fake-quant (QAT) then sits right on the ADD
        return tf.reshape(x2d, shape) + tf.reshape(z, shape)

    def compute_output_shape(self, shape):
        if self.stride == 1:
            return (*shape[:-1], self.out_dim)
        return (shape[0], halved(shape[1], True), halved(shape[2], True), self.out_dim)

    def get_config(self):
        return {**super().get_config(), "in_dim": self.in_dim, "out_dim": self.out_dim, "stride": self.stride,
                "size": self.size, **{name: getattr(self, name) for name in self.ARGS},
                "drop_path": self.drop_path_rate}
