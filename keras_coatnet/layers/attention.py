"""2-D multi-head self-attention with a relative position bias, as timm's `Attention2d` + `RelPos*`. NHWC.

Three ways to make the bias [heads, N, N] (N = H*W tokens, row-major) for an H x W feature map:
- 'bias' (paper, timm RelPosBias): a learned table [(2H-1)(2W-1), heads], entry (dy + H-1)(2W-1) + (dx + W-1)
  for query - key offset (dy, dx).
- 'bias_tf' (timm RelPosBiasTf): a learned table [heads, 2H-1, 2W-1] indexed by key - query offset.
- 'mlp' (timm RelPosMlp, 'cr' mode): a 2 -> hidden -> heads ReLU MLP on sign(d) * log(1 + |d|) offsets,
  gathered like 'bias'. It has no size-dependent weights, so it runs at any resolution unchanged.
"""

import keras
import numpy as np
from keras import layers, ops

from keras_coatnet.layers.common import PACKAGE, freeze_sublayers_if_frozen


def relative_index(height, width, key_minus_query=False):
    """[N, N] int32 index into a flattened (2H-1) x (2W-1) offset grid for each (query, key) token pair."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()])  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :]  # query - key, [2, N, N]
    if key_minus_query:
        rel = -rel
    return ((rel[0] + height - 1) * (2 * width - 1) + rel[1] + width - 1).astype("int32")


def log_offsets(height, width):
    """[(2H-1), (2W-1), 2] float32 grid of sign(d) * log(1 + |d|) for row and column offsets d."""
    dy = np.arange(-(height - 1), height, dtype="float32")
    dx = np.arange(-(width - 1), width, dtype="float32")
    grid = np.stack(np.meshgrid(dy, dx, indexing="ij"), axis=-1)
    return np.sign(grid) * np.log1p(np.abs(grid))


@keras.saving.register_keras_serializable(package=PACKAGE)
class RelativePositionBias(layers.Layer):
    """Produces the attention bias [heads, N, N] for a fixed `size` = (H, W); see the module docstring."""

    def __init__(self, size, num_heads, kind="bias", hidden_dim=512, **kwargs):
        super().__init__(**kwargs)
        self.size, self.num_heads, self.kind, self.hidden_dim = tuple(size), num_heads, kind, hidden_dim
        h, w = self.size
        self.index = relative_index(h, w, key_minus_query=(kind == "bias_tf")).reshape(-1)
        if kind == "mlp":
            self.coords = log_offsets(h, w).reshape(-1, 2)
            self.fc1 = layers.Dense(hidden_dim, activation="relu", name="mlp__fc1", dtype=self.dtype_policy)
            self.drop = layers.Dropout(0.125, name="mlp__drop", dtype=self.dtype_policy)
            self.fc2 = layers.Dense(num_heads, name="mlp__fc2", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        h, w = self.size
        if self.kind == "mlp":
            self.fc1.build((None, 2))
            self.fc2.build((None, self.hidden_dim))
            freeze_sublayers_if_frozen(self)
        else:
            shape = ((2 * h - 1) * (2 * w - 1), self.num_heads) if self.kind == "bias" else (
                self.num_heads, 2 * h - 1, 2 * w - 1)
            self.relative_position_bias_table = self.add_weight(
                name="relative_position_bias_table", shape=shape,
                initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def table(self):
        """The bias table as [(2H-1)(2W-1), heads], whatever the kind."""
        if self.kind == "mlp":
            return self.fc2(self.drop(self.fc1(ops.convert_to_tensor(self.coords, self.compute_dtype))))
        if self.kind == "bias_tf":
            return ops.transpose(ops.reshape(self.relative_position_bias_table, (self.num_heads, -1)))
        return self.relative_position_bias_table

    def call(self, inputs=None):
        n = self.size[0] * self.size[1]
        table = self.table()
        # Gather from a reshape of the table, not from the variable: on TensorFlow a gather's gradient is
        # IndexedSlices with each entry repeated up to N times, which Keras's optimizers square slice by slice
        # (AdamW's second moment gets sum(g^2), not (sum g)^2); a reshape's gradient is their exact dense sum.
        # Measured on CPU it is as fast as the plain gather, faster than a one-hot matmul or a Toeplitz expansion.
        table = ops.reshape(table, ops.shape(table))
        bias = ops.take(table, self.index, axis=0)  # [N*N, heads]
        return ops.transpose(ops.reshape(bias, (n, n, self.num_heads)), (2, 0, 1))

    def get_config(self):
        return {**super().get_config(), "size": self.size, "num_heads": self.num_heads, "kind": self.kind,
                "hidden_dim": self.hidden_dim}


@keras.saving.register_keras_serializable(package=PACKAGE)
class RelativeAttention2d(layers.Layer):
    """Multi-head self-attention over all H*W positions with a relative position bias (timm `Attention2d`).

    qkv and proj are 1x1 convs. `head_first` gives timm's channel layout of qkv: [heads, (q, k, v), dim_head]
    when True, [(q, k, v), heads, dim_head] when False. Attention width is `out_dim` when `expand_first`,
    else `in_dim`. Input [B, H, W, in_dim] with (H, W) == `size` -> [B, H, W, out_dim].
    Logits, bias and softmax are computed in float32 under mixed precision.
    """

    def __init__(self, in_dim, out_dim, size, dim_head=32, expand_first=True, head_first=True, use_bias=True,
                 rel_pos_type="bias", rel_pos_dim=512, attn_drop=0.0, proj_drop=0.0, **kwargs):
        super().__init__(**kwargs)
        self.in_dim, self.out_dim, self.size = in_dim, out_dim, tuple(size)
        self.dim_head, self.expand_first, self.head_first, self.use_bias = dim_head, expand_first, head_first, use_bias
        self.rel_pos_type, self.rel_pos_dim = rel_pos_type, rel_pos_dim
        self.attn_drop_rate, self.proj_drop_rate = attn_drop, proj_drop
        dim_attn = out_dim if expand_first else in_dim
        if dim_attn % dim_head:
            raise ValueError(f"Attention width {dim_attn} is not a multiple of dim_head={dim_head}.")
        self.num_heads, self.dim_attn = dim_attn // dim_head, dim_attn
        dt = self.dtype_policy
        self.qkv = layers.Conv2D(3 * dim_attn, 1, use_bias=use_bias, name="qkv", dtype=dt)
        self.rel_pos = None
        if rel_pos_type in ("bias", "bias_tf", "mlp"):
            self.rel_pos = RelativePositionBias(self.size, self.num_heads, rel_pos_type, rel_pos_dim,
                                                name="rel_pos", dtype=dt)
        self.attn_drop = layers.Dropout(attn_drop, name="attn_drop", dtype=dt)
        self.proj = layers.Conv2D(out_dim, 1, use_bias=use_bias, name="proj", dtype=dt)
        self.proj_drop = layers.Dropout(proj_drop, name="proj_drop", dtype=dt)

    def build(self, shape):
        self.qkv.build(shape)
        if self.rel_pos is not None:
            self.rel_pos.build()
        self.proj.build((*shape[:-1], self.dim_attn))
        freeze_sublayers_if_frozen(self)

    def call(self, x):
        h, w = self.size
        if x.shape[1] is not None and (x.shape[1], x.shape[2]) != (h, w):
            raise ValueError(f"Attention built for a {h}x{w} map got {x.shape[1]}x{x.shape[2]}.")
        n, heads, d = h * w, self.num_heads, self.dim_head
        qkv = ops.reshape(self.qkv(x), (-1, n, heads, 3, d) if self.head_first else (-1, n, 3, heads, d))
        qkv = ops.transpose(qkv, (3, 0, 2, 1, 4) if self.head_first else (2, 0, 3, 1, 4))  # [3, B, heads, N, d]
        q, k, v = ops.unstack(qkv, 3, axis=0)  # the gradient of an unstack is one stack, of indexing 3 zero-fills
        logits = ops.matmul(q * ops.cast(d ** -0.5, q.dtype), ops.transpose(k, (0, 1, 3, 2)))
        logits = ops.cast(logits, "float32")
        if self.rel_pos is not None:
            logits = logits + ops.cast(self.rel_pos(), "float32")
        # A 1x1 map (32x32 inputs) attends to itself only: weight exp(0) = 1, still connected to the graph
        # (Keras warns about a size-1 softmax, and an unconnected bias table would warn in training).
        attn = ops.cast(ops.softmax(logits, axis=-1) if n > 1 else ops.exp(logits - logits), v.dtype)
        out = ops.matmul(self.attn_drop(attn), v)  # [B, heads, N, d]
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, h, w, self.dim_attn))
        return self.proj_drop(self.proj(out))

    def compute_output_shape(self, shape):
        return (*shape[:-1], self.out_dim)

    def get_config(self):
        return {**super().get_config(), "in_dim": self.in_dim, "out_dim": self.out_dim, "size": self.size,
                "dim_head": self.dim_head, "expand_first": self.expand_first, "head_first": self.head_first,
                "use_bias": self.use_bias, "rel_pos_type": self.rel_pos_type, "rel_pos_dim": self.rel_pos_dim,
                "attn_drop": self.attn_drop_rate, "proj_drop": self.proj_drop_rate}
