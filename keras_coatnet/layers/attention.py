"""2-D multi-head self-attention with a relative position bias, as timm's `Attention2d` + `RelPos*`. NHWC.

Three ways to make the bias [heads, N, N] (N = H*W tokens, row-major) for an H x W feature map:
- 'bias' (paper, timm RelPosBias): a learned table [(2H-1)(2W-1), heads], entry (dy + H-1)(2W-1) + (dx + W-1)
  for query - key offset (dy, dx).
- 'bias_tf' (timm RelPosBiasTf): a learned table [heads, 2H-1, 2W-1] indexed by key - query offset.
- 'mlp' (timm RelPosMlp, 'cr' mode): a 2 -> hidden -> heads ReLU MLP on sign(d) * log(1 + |d|) offsets,
  gathered like 'bias'. It has no size-dependent weights, so it runs at any resolution unchanged.

Tables are trained for one map size (the layer's `size`) and run at any: see `RelativePositionBias`.
"""

import functools

import keras
import numpy as np
from keras import layers, ops

from keras_coatnet.layers import export_form, table_resize
from keras_coatnet.layers.common import PACKAGE, freeze_sublayers_if_frozen
from keras_coatnet.layers.folding import Conv, evaluate


@functools.lru_cache(maxsize=32)
def relative_index(height, width, key_minus_query=False):
    """[N, N] int32 index into a flattened (2H-1) x (2W-1) offset grid for each (query, key) token pair.
    Cached (eager backends ask for it at every call at a run-time size); read-only."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()])  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :]  # query - key, [2, N, N]
    if key_minus_query:
        rel = -rel
    index = ((rel[0] + height - 1) * (2 * width - 1) + rel[1] + width - 1).astype("int32")
    index.flags.writeable = False
    return index


def log_offsets(height, width):
    """[(2H-1), (2W-1), 2] float32 grid of sign(d) * log(1 + |d|) for row and column offsets d."""
    dy = np.arange(-(height - 1), height, dtype="float32")
    dx = np.arange(-(width - 1), width, dtype="float32")
    grid = np.stack(np.meshgrid(dy, dx, indexing="ij"), axis=-1)
    return np.sign(grid) * np.log1p(np.abs(grid))


def relative_index_in_graph(height, width, key_minus_query=False):
    """`relative_index(h, w).reshape(-1)` for scalar int tensors h, w (sizes known only when the graph runs)."""
    tokens = ops.arange(height * width)
    rows, cols = tokens // width, tokens % width
    dy, dx = rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]
    if key_minus_query:
        dy, dx = -dy, -dx
    return ops.reshape((dy + height - 1) * (2 * width - 1) + dx + width - 1, (-1,))


_LOG1P = np.log1p(np.arange(4096, dtype="float32"))  # NumPy's float32 log1p, so both forms agree bit for bit


def log_offsets_in_graph(height, width):
    """`log_offsets(h, w)` for scalar int tensors h, w: [(2h-1), (2w-1), 2] float32."""
    def axis(n):
        d = ops.arange(-(n - 1), n)
        magnitude = ops.abs(d)
        known = ops.take(_LOG1P, ops.minimum(magnitude, len(_LOG1P) - 1))
        value = ops.where(magnitude < len(_LOG1P), known, ops.log1p(ops.cast(magnitude, "float32")))
        return ops.cast(ops.sign(d), "float32") * value

    dy, dx = axis(height), axis(width)
    shape = (ops.shape(dy)[0], ops.shape(dx)[0])
    return ops.stack([ops.broadcast_to(dy[:, None], shape), ops.broadcast_to(dx[None, :], shape)], axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RelativePositionBias(layers.Layer):
    """The attention bias [heads, N, N] for the h x w map `call` is given (N = h*w); see the module docstring.

    `size` = (H0, W0) is the map its table is trained for (kept in the config). At (H0, W0) the table is used as it
    is; at any other (h, w) it is resized in the graph as the weight loader resizes a checkpoint
    (`table_resize`), and 'mlp' evaluates its MLP at the run-time offsets.
    """

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

    def table(self, height=None, width=None):
        """The bias table as [(2h-1)(2w-1), heads] for an h x w map (default: the trained size), whatever the
        kind. `height`, `width`: ints, or scalar int tensors on TensorFlow when the size is only known at run
        time."""
        h0, w0 = self.size
        height, width = (h0, w0) if height is None else (height, width)
        static = isinstance(height, (int, np.integer)) and isinstance(width, (int, np.integer))
        trained = static and (height, width) == self.size
        if self.kind == "mlp":
            coords = (self.coords if trained else log_offsets(height, width).reshape(-1, 2) if static
                      else ops.reshape(log_offsets_in_graph(height, width), (-1, 2)))
            return self.fc2(self.drop(self.fc1(ops.convert_to_tensor(coords, self.compute_dtype))))
        table = self.relative_position_bias_table
        grid = table if self.kind == "bias_tf" else ops.reshape(ops.transpose(table), (-1, 2 * h0 - 1, 2 * w0 - 1))
        if not trained:  # [heads, 2H0-1, 2W0-1] -> [heads, 2h-1, 2w-1]
            rows, cols = self.resize_matrices(height, width, static)
            grid = ops.einsum("ys,hst,xt->hyx", ops.cast(rows, grid.dtype), grid, ops.cast(cols, grid.dtype))
        return ops.transpose(ops.reshape(grid, (self.num_heads, -1)))

    def resize_matrices(self, height, width, static):
        """[2h-1, 2H0-1] and [2w-1, 2W0-1] resize matrices (identities at the trained size)."""
        src_h, src_w = 2 * self.size[0] - 1, 2 * self.size[1] - 1
        if static:
            return table_resize.interpolation_matrix(src_h, 2 * height - 1), table_resize.interpolation_matrix(
                src_w, 2 * width - 1)
        trained = ops.logical_and(ops.equal(height, self.size[0]), ops.equal(width, self.size[1]))
        out = []
        for src, dst in ((src_h, 2 * height - 1), (src_w, 2 * width - 1)):
            identity = ops.one_hot(ops.arange(dst), src, dtype="float64")  # [src, src] when dst == src
            out.append(ops.where(trained, identity, table_resize.interpolation_matrix_in_graph(src, dst)))
        return out

    def call(self, inputs=None):
        """inputs: the [B, h, w, C] map the bias is for (only its shape is read); None: the trained size."""
        height, width = self.size if inputs is None else ops.shape(inputs)[1:3]
        static = isinstance(height, (int, np.integer)) and isinstance(width, (int, np.integer))
        if static and (height, width) == self.size:
            table, index = self.table(), self.index
        elif static:
            table = self.table(int(height), int(width))
            index = relative_index(int(height), int(width), key_minus_query=(self.kind == "bias_tf")).reshape(-1)
        else:
            table = self.table(height, width)
            index = relative_index_in_graph(height, width, key_minus_query=(self.kind == "bias_tf"))
        n = height * width
        # Gather from a reshape of the table, not from the variable: on TensorFlow a gather's gradient is
        # IndexedSlices with each entry repeated up to N times, which Keras's optimizers square slice by slice
        # (AdamW's second moment gets sum(g^2), not (sum g)^2); a reshape's gradient is their exact dense sum.
        # Measured on CPU it is as fast as the plain gather, faster than a one-hot matmul or a Toeplitz expansion.
        table = ops.reshape(table, ops.shape(table))
        bias = ops.take(table, index, axis=0)  # [N*N, heads]
        return ops.transpose(ops.reshape(bias, (n, n, self.num_heads)), (2, 0, 1))

    def constant(self, size):
        """The bias for an h x w map (`size`) as a float32 NumPy array [heads, N, N], evaluated now (also while a
        TensorFlow function is being traced)."""
        return evaluate(lambda: self(np.zeros((1, *size, 1), np.float32))).astype(np.float32)

    def export_bias_from_table(self, size, anchor):
        """The bias [heads, N, N] for an h x w map (`size`) as a TF graph that expands the small table
        [heads, (2h-1)(2w-1)] (evaluated now: constant, so 'mlp' tables cost nothing at run time) by
        `toeplitz_expand` (a GATHER where h or w is 1).

        `anchor` is any 2-D tensor of the block: adding `min(|anchor[0, 0]|, 0)` (always 0; one element) keeps
        the converter from folding the expansion into the [heads, N, N] constant, ~50x more bytes at 14x14."""
        import tensorflow as tf

        table = evaluate(lambda: self.table(*size)).astype(np.float32).T  # [heads, T]
        (h, w), heads = size, self.num_heads
        zero = tf.minimum(tf.abs(anchor[:1, :1]), 0.0)  # always 0, but not foldable (x * 0 would be)
        key_minus_query = self.kind == "bias_tf"
        if h >= 2 and w >= 2:
            grid = table.reshape(heads, 2 * h - 1, 2 * w - 1)
            if key_minus_query:  # key - query offsets: the same Toeplitz form of the reversed table
                grid = grid[:, ::-1, ::-1]
            return toeplitz_expand(tf.constant(grid.copy()) + zero, h, w)
        index = relative_index(h, w, key_minus_query).reshape(-1)
        bias = tf.gather(tf.constant(table) + zero, tf.constant(index), axis=1)  # [heads, N*N]
        return tf.reshape(bias, (heads, h * w, h * w))

    def get_config(self):
        return {**super().get_config(), "size": self.size, "num_heads": self.num_heads, "kind": self.kind,
                "hidden_dim": self.hidden_dim}


def toeplitz_expand(table, h, w):
    """[heads, 2H-1, 2W-1] offset table T (a TF tensor) -> bias [heads, H*W, H*W] with
    bias[:, (yi, xi), (yj, xj)] = T[:, yi - yj + H - 1, xi - xj + W - 1], by tiling, slicing and reshaping
    (no GATHER; H, W >= 2).

    Row i of a Toeplitz matrix is a window of the reversed table starting at (n - 1 - i): tiling the reversed
    table and reading it with a row stride one shorter than its period shifts each row by one. Done along x on
    every table row, then along y with each [W, W] block as the payload."""
    import tensorflow as tf

    heads = table.shape[0]
    r = table[:, ::-1, ::-1]

    def skew(t, n, payload):  # t [heads, rows, 2n-1, payload] -> [heads, rows, n, n, payload]
        rows, period = t.shape[1], 2 * n - 1
        flat = tf.reshape(tf.tile(t, (1, 1, n + 1, 1)), (heads, rows, (n + 1) * period, payload))
        window = flat[:, :, n - 1:n - 1 + n * (period - 1)]
        return tf.reshape(window, (heads, rows, n, period - 1, payload))[:, :, :, :n]

    a = skew(tf.reshape(r, (heads, 2 * h - 1, 2 * w - 1, 1)), w, 1)  # [heads, 2H-1, W(xi), W(xj), 1]
    a = tf.reshape(a, (heads, 1, 2 * h - 1, w * w))
    b = tf.reshape(skew(a, h, w * w), (heads, h, h, w, w))  # [heads, yi, yj, xi, xj]
    return tf.reshape(tf.transpose(b, (0, 1, 3, 2, 4)), (heads, h * w, h * w))


def attention_core(q, k, v, bias, heads, d, mode):
    """softmax(q k^T + bias) v for 2-D TF tensors q, k, v [N, heads*d] (head-major columns) -> [N, heads*d].

    mode 'per_head': 2-D matmuls against [rows, N] operands (FULLY_CONNECTED with run-time weights); 'batched':
    one BATCH_MATMUL over heads, each multiplying by a transposed right operand ([heads, N, d] k, [heads, d, N] v;
    the int8 kernel is ~8x slower when it transposes the right operand itself)."""
    import tensorflow as tf

    n = q.shape[0]
    split = lambda t, perm: tf.transpose(tf.reshape(t, (n, heads, d)), perm)  # noqa: E731
    if mode == "per_head":
        qs, ks, v_ts = (tf.unstack(split(t, p)) for t, p in ((q, (1, 0, 2)), (k, (1, 0, 2)), (v, (1, 2, 0))))
        logits = tf.stack([tf.matmul(qh, kh, transpose_b=True) for qh, kh in zip(qs, ks)])  # [heads, N, N]
        if bias is not None:
            logits = logits + bias
        probs = tf.unstack(tf.nn.softmax(logits, axis=-1))
        out = tf.stack([tf.matmul(p, v_t, transpose_b=True) for p, v_t in zip(probs, v_ts)])  # [heads, N, d]
    else:
        logits = tf.matmul(split(q, (1, 0, 2)), split(k, (1, 0, 2)), transpose_b=True)  # [heads, N, N]
        if bias is not None:
            logits = logits + bias
        out = tf.matmul(tf.nn.softmax(logits, axis=-1), split(v, (1, 2, 0)), transpose_b=True)  # [heads, N, d]
    return tf.reshape(tf.transpose(out, (1, 0, 2)), (n, heads * d))


@keras.saving.register_keras_serializable(package=PACKAGE)
class RelativeAttention2d(layers.Layer):
    """Multi-head self-attention over all H*W positions with a relative position bias (timm `Attention2d`).

    qkv and proj are 1x1 convs. `head_first` gives timm's channel layout of qkv: [heads, (q, k, v), dim_head]
    when True, [(q, k, v), heads, dim_head] when False. Attention width is `out_dim` when `expand_first`,
    else `in_dim`. Input [B, H, W, in_dim], any H, W -> [B, H, W, out_dim]; `size` is the map the relative
    bias table is trained for.
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
        h, w = ops.shape(x)[1:3]  # ints, or scalar tensors on TensorFlow when only known at run time
        n, heads, d = h * w, self.num_heads, self.dim_head
        qkv = ops.reshape(self.qkv(x), (-1, n, heads, 3, d) if self.head_first else (-1, n, 3, heads, d))
        qkv = ops.transpose(qkv, (3, 0, 2, 1, 4) if self.head_first else (2, 0, 3, 1, 4))  # [3, B, heads, N, d]
        q, k, v = ops.unstack(qkv, 3, axis=0)  # the gradient of an unstack is one stack, of indexing 3 zero-fills
        logits = ops.matmul(q * ops.cast(d ** -0.5, q.dtype), ops.transpose(k, (0, 1, 3, 2)))
        logits = ops.cast(logits, "float32")
        if self.rel_pos is not None:
            logits = logits + ops.cast(self.rel_pos(x), "float32")
        # A 1x1 map (32x32 inputs) attends to itself only: weight exp(0) = 1, still connected to the graph
        # (Keras warns about a size-1 softmax, and an unconnected bias table would warn in training).
        single = isinstance(n, (int, np.integer)) and n == 1
        attn = ops.cast(ops.exp(logits - logits) if single else ops.softmax(logits, axis=-1), v.dtype)
        out = ops.matmul(self.attn_drop(attn), v)  # [B, heads, N, d]
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, h, w, self.dim_attn))
        return self.proj_drop(self.proj(out))

    def export_call(self, tokens, size, options, in_affine, out_scale=None):
        """`call` at inference as a TF graph on 2-D tokens [N, in_dim] of an h x w map (`size`) -> [N, out_dim].

        `in_affine` (scale, shift) [in_dim] is folded into qkv (the norm before it), 1/sqrt(d) into q, `out_scale`
        [out_dim] (a layer scale after it) into proj. `options.rel_bias`: the bias stored as a constant or
        expanded at run time from the table (`RelativePositionBias.export_bias_from_table`)."""
        qkv = Conv.from_layer(self.qkv).as_matrix().scale_input(*in_affine)
        heads, d = self.num_heads, self.dim_head
        cols = np.arange(3 * heads * d)
        cols = cols.reshape(heads, 3, d) if self.head_first else cols.reshape(3, heads, d).transpose(1, 0, 2)
        q, k, v = (qkv.columns(cols[:, i].reshape(-1)) for i in range(3))  # each [N, heads * d], head-major
        q.scale_output(np.full(heads * d, d ** -0.5))
        q, k, v = (export_form.linear(lin, tokens) for lin in (q, k, v))
        if self.rel_pos is None:
            bias = None
        elif options.rel_bias == "table":
            bias = self.rel_pos.export_bias_from_table(size, tokens)
        else:
            bias = export_form.const(self.rel_pos.constant(size))
        out = attention_core(q, k, v, bias, heads, d, options.attention)
        proj = Conv.from_layer(self.proj).as_matrix()
        if out_scale is not None:
            proj.scale_output(out_scale)
        return export_form.linear(proj, out)

    def compute_output_shape(self, shape):
        return (*shape[:-1], self.out_dim)

    def get_config(self):
        return {**super().get_config(), "in_dim": self.in_dim, "out_dim": self.out_dim, "size": self.size,
                "dim_head": self.dim_head, "expand_first": self.expand_first, "head_first": self.head_first,
                "use_bias": self.use_bias, "rel_pos_type": self.rel_pos_type, "rel_pos_dim": self.rel_pos_dim,
                "attn_drop": self.attn_drop_rate, "proj_drop": self.proj_drop_rate}
