"""The export view: the model's forward pass rebuilt from its weights as an int8-friendly TF graph.

Same architecture and trained weights, different graph (all shapes static, batch 1):
- BatchNorm and LayerNorm affines, LayerScale and the attention's 1/sqrt(d) are folded into the
  neighbouring convs / matmuls (``folding``); what is left of LayerNorm is a plain normalization.
- The relative-position table is evaluated once at export (also an 'mlp' table). ``rel_bias="constant"``
  stores the expanded bias [heads, N, N] (fastest; ~2.4 M more values for CoAtNet-0 at 224); "table"
  keeps the small table and expands it at run time with tile/slice/reshape (``toeplitz_expand``).
- Transformer blocks run on 2-D [tokens, channels] tensors, so every 1x1 conv is a FULLY_CONNECTED;
  attention is one batched matmul over heads (``attention="batched"``: XNNPACK runs it in float) or
  per-head 2-D matmuls ("per_head": FULLY_CONNECTED with run-time weights, the fastest int8 kernel for
  activation x activation products; int8 BATCH_MATMUL is not delegated and ~2x slower).
- 2x2 average pools (main paths and shortcuts) run as depthwise convs (XNNPACK has no int8 average pool).
  LayerNorm's ``var + eps`` is one FULLY_CONNECTED (an int8 ``+ eps`` ADD is not delegated).
- "auto" (the default of both) picks per export format (``Options.resolve``): float formats and the CPU int8
  formats (int8, qat_int8: attention in float islands) get batched attention and the constant bias; the
  integer-only formats (int8_full, int16x8) get per-head attention and the table (smaller file).
- GELU is exact by default (TFLite GELU op); "tanh" and "sigmoid" (x * sigmoid(1.702 x)) are faster
  approximations that change the function slightly.
Layers the view does not know run unchanged. ``forward(model)`` is checked against the Keras model by
``export_model`` (float formats must agree to 1e-4).
"""

import numpy as np
import tensorflow as tf
from keras import layers

from export._compat import run_through_graph
from export.folding import Conv, norm_affine, numpy
from keras_coatnet.layers.attention import relative_index
from keras_coatnet.layers.common import Downsample2d
from keras_coatnet.layers.mbconv import MBConvBlock
from keras_coatnet.layers.stem import Stem
from keras_coatnet.layers.transformer import TransformerBlock

GELU_MODES = ("exact", "tanh", "sigmoid")
ATTENTION_MODES = ("auto", "batched", "per_head")
REL_BIAS_MODES = ("auto", "table", "constant")
PER_HEAD_FORMATS = ("int8_full", "int16x8")  # integer attention matmuls: per-head FULLY_CONNECTED
CONSTANT_BIAS_FORMATS = (None, "saved_model", "fp32", "int8", "qat_int8")  # None: the float view itself


def _const(a):
    return tf.constant(np.asarray(a, np.float32))


class Options:
    """How the view builds the graph: ``gelu`` in GELU_MODES, ``attention`` in ATTENTION_MODES,
    ``rel_bias`` in REL_BIAS_MODES."""

    def __init__(self, gelu="exact", attention="auto", rel_bias="auto"):
        for value, allowed, what in ((gelu, GELU_MODES, "gelu"), (attention, ATTENTION_MODES, "attention"),
                                     (rel_bias, REL_BIAS_MODES, "rel_bias")):
            if value not in allowed:
                raise ValueError(f"unknown {what} mode {value!r}; allowed: {allowed}")
        self.gelu, self.attention, self.rel_bias = gelu, attention, rel_bias

    def resolve(self, fmt=None):
        """These options with "auto" replaced by the choice for export format ``fmt`` (None: float)."""
        attention = self.attention
        if attention == "auto":
            attention = "per_head" if fmt in PER_HEAD_FORMATS else "batched"
        rel_bias = self.rel_bias
        if rel_bias == "auto":
            rel_bias = "constant" if fmt in CONSTANT_BIAS_FORMATS else "table"
        return Options(self.gelu, attention, rel_bias)

    def as_dict(self):
        return {"gelu": self.gelu, "attention": self.attention, "rel_bias": self.rel_bias}


def _activation(name, options):
    """The TF activation for a timm act_layer name (GELU per ``options.gelu``)."""
    if name in ("gelu", "gelu_tanh"):
        mode = "tanh" if name == "gelu_tanh" and options.gelu == "exact" else options.gelu
        if mode == "sigmoid":
            return lambda x: x * tf.sigmoid(1.702 * x)
        return lambda x: tf.nn.gelu(x, approximate=(mode == "tanh"))
    return {"silu": tf.nn.silu, "swish": tf.nn.silu, "relu": tf.nn.relu, "tanh": tf.tanh}[name]


def conv(c, x):
    """Applies a folded Conv to NHWC ``x``."""
    if c.depthwise:
        y = tf.nn.depthwise_conv2d(x, _const(c.kernel), [1, c.strides, c.strides, 1], c.padding)
    else:
        y = tf.nn.conv2d(x, _const(c.kernel), c.strides, c.padding)
    return tf.nn.bias_add(y, _const(c.bias))


def linear(lin, x):
    """Applies a Linear to 2-D [N, Cin] ``x`` -> [N, Cout] (a TFLite FULLY_CONNECTED)."""
    return tf.matmul(x, _const(lin.w)) + _const(lin.b)


def normalize(x, eps):
    """(x - mean) / sqrt(var + eps) over the last axis: LayerNorm without its affine (folded elsewhere).

    ``var + eps`` is one FULLY_CONNECTED (weights 1/C, bias eps) on the [tokens, C] squares: a separate int8
    ``+ eps`` ADD is not taken by XNNPACK (the constant's scale is ~1e-7 of the output's, beyond its limits)."""
    channels = x.shape[-1]
    d = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    mean_of_squares = _const(np.full((channels, 1), 1.0 / channels))
    var = tf.matmul(tf.reshape(d * d, (-1, channels)), mean_of_squares) + _const([eps])
    return d * tf.math.rsqrt(tf.reshape(var, (*d.shape[:-1], 1)))


def _padded_conv(layer_list):
    """Splits a timm conv (list of [ZeroPadding2D], Conv) into (padding layers, folded Conv)."""
    *pads, last = layer_list
    return pads, Conv.from_layer(last)


def pool(p, x):
    """A Pool2d on NHWC ``x``; 'avg2' runs as a 2x2 stride-2 depthwise conv of weights 1/4 (the same average:
    XNNPACK runs that in int8, while an int8 AVERAGE_POOL_2D falls back to a ~10x slower built-in kernel and
    splits the XNNPACK graph; the quantizer keeps it int8 even when asked to leave it in float)."""
    if p.pool_type != "avg2":
        return p(x)
    weights = np.full((2, 2, x.shape[-1], 1), 0.25)
    return tf.nn.depthwise_conv2d(x, _const(weights), [1, 2, 2, 1], "VALID")


def shortcut(block, x):
    """The block's shortcut on NHWC ``x``: identity, or a Downsample2d (its 2x pool via ``pool``, then the
    1x1 ``expand`` conv when the width changes)."""
    sc = block.shortcut
    if sc is None:
        return x
    if not isinstance(sc, Downsample2d):
        return sc(x)
    if sc.pool is not None:
        x = pool(sc.pool, x)
    return conv(Conv.from_layer(sc.expand), x) if sc.expand is not None else x


def _apply_pads(pads, x):
    for p in pads:
        x = p(x)
    return x


def _is_layernorm(norm):
    return isinstance(norm, layers.LayerNormalization)


def _norm_then(norm, x):
    """Returns (x', scale, shift): LayerNorm -> normalized x and its affine; BatchNorm -> x and its affine."""
    scale, shift = norm_affine(norm)
    if _is_layernorm(norm):
        return normalize(x, norm.epsilon), scale, shift
    return x, scale, shift


def stem(block, x, options):
    """timm Stem: conv1 (+ folded BN) -> act -> conv2."""
    pads1, c1 = _padded_conv(block.conv1)
    if _is_layernorm(block.norm1):
        raise ValueError("a LayerNorm stem is not supported by the export view")
    c1.scale_output(*norm_affine(block.norm1))
    x = _activation(block.act_layer, options)(conv(c1, _apply_pads(pads1, x)))
    pads2, c2 = _padded_conv(block.conv2)
    return conv(c2, _apply_pads(pads2, x))


def mbconv(block, x, options):
    """MBConvBlock with the pre-norm folded into conv1_1x1 and norm1/norm2 folded into the convs before them."""
    c = block.cfg
    act = _activation(c["act_layer"], options)
    short = shortcut(block, x)
    if _is_layernorm(block.pre_norm):
        raise ValueError("a LayerNorm MBConv is not supported by the export view")
    pre = norm_affine(block.pre_norm)
    pads1, c1 = _padded_conv(block.conv1_1x1)
    if block.pre_norm_act:
        x = act(x * _const(pre[0]) + _const(pre[1]))
    else:
        c1.scale_input(*pre)  # 1x1 conv: exact; the 2x pool in between is linear per channel
    if block.down is not None:
        x = pool(block.down, x)
    c1.scale_output(*norm_affine(block.norm1))
    x = act(conv(c1, _apply_pads(pads1, x)))
    pads2, c2 = _padded_conv(block.conv2_kxk)
    n2 = norm_affine(block.norm2)
    if block.se_early is None:
        c2.scale_output(*n2)
    x = conv(c2, _apply_pads(pads2, x))
    if block.se_early is not None:
        x = _squeeze_excite(block.se_early, x, options)
        x = x * _const(n2[0]) + _const(n2[1])
    x = act(x)
    if block.se is not None:
        x = _squeeze_excite(block.se, x, options)
    pads3, c3 = _padded_conv(block.conv3_1x1)
    return conv(c3, _apply_pads(pads3, x)) + short


def _squeeze_excite(se, x, options):
    s = tf.reduce_mean(x, axis=(1, 2), keepdims=True)
    s = conv(Conv.from_layer(se.fc1), s)
    s = conv(Conv.from_layer(se.fc2), _activation(se.act_layer, options)(s))
    return x * tf.sigmoid(s)


def relative_bias(attn, size=None):
    """The attention's relative-position bias for an h x w map (`size`, default the table's) as a NumPy
    constant [heads, N, N] (None without one)."""
    if attn.rel_pos is None:
        return None
    with tf.init_scope():  # evaluated eagerly, even while the serving function is traced
        bias = attn.rel_pos() if size is None else attn.rel_pos(np.zeros((1, *size, 1), np.float32))
        return np.asarray(tf.convert_to_tensor(bias), np.float32)


def _qkv_linears(attn, in_scale, in_shift):
    """(q, k, v) Linears from the qkv 1x1 conv, norm affine folded in, q pre-scaled by 1/sqrt(d).

    Each output is [N, heads * dim_head] in head-major order."""
    qkv = Conv.from_layer(attn.qkv).as_matrix().scale_input(in_scale, in_shift)
    heads, d = attn.num_heads, attn.dim_head
    cols = np.arange(3 * heads * d)
    cols = cols.reshape(heads, 3, d) if attn.head_first else cols.reshape(3, heads, d).transpose(1, 0, 2)
    q, k, v = (qkv.columns(cols[:, i].reshape(-1)) for i in range(3))
    q.scale_output(np.full(heads * d, d ** -0.5))
    return q, k, v


def toeplitz_expand(table, h, w):
    """[heads, 2H-1, 2W-1] offset table T -> bias [heads, H*W, H*W] with bias[:, (yi, xi), (yj, xj)] =
    T[:, yi - yj + H - 1, xi - xj + W - 1], by tiling, slicing and reshaping (no GATHER; H, W >= 2).

    Row i of a Toeplitz matrix is a window of the reversed table starting at (n - 1 - i): tiling the reversed
    table and reading it with a row stride one shorter than its period shifts each row by one. Done along
    x on every table row, then along y with each [W, W] block as the payload."""
    heads = table.shape[0]
    r = table[:, ::-1, ::-1]  # [heads, 2H-1, 2W-1], reversed: constant at export if ``table`` is

    def skew(t, n, payload):  # t [heads, rows, 2n-1, payload] -> [heads, rows, n, n, payload]
        rows, period = t.shape[1], 2 * n - 1
        flat = tf.reshape(tf.tile(t, (1, 1, n + 1, 1)), (heads, rows, (n + 1) * period, payload))
        window = flat[:, :, n - 1:n - 1 + n * (period - 1)]
        return tf.reshape(window, (heads, rows, n, period - 1, payload))[:, :, :, :n]

    a = skew(tf.reshape(r, (heads, 2 * h - 1, 2 * w - 1, 1)), w, 1)  # [heads, 2H-1, W(xi), W(xj), 1]
    a = tf.reshape(a, (heads, 1, 2 * h - 1, w * w))
    b = tf.reshape(skew(a, h, w * w), (heads, h, h, w, w))  # [heads, yi, yj, xi, xj]
    return tf.reshape(tf.transpose(b, (0, 1, 3, 2, 4)), (heads, h * w, h * w))


def bias_from_table(attn, anchor, size):
    """The bias [heads, N, N] for an h x w map (`size`) expanded at run time from the small table
    [heads, (2h-1)(2w-1)] (resized from the trained one where `size` differs).

    The table is evaluated at export (constant, so 'mlp' tables cost nothing at run time) and expanded by
    ``toeplitz_expand`` (a GATHER where H or W is 1). ``anchor`` is any 2-D tensor of the block: adding
    ``min(|anchor[0, 0]|, 0)`` (always 0; one element, so nearly free) keeps the converter from folding the
    expansion into a [heads, N, N] constant, N^2 / (2H-1)(2W-1) times (~50x at 14x14) more bytes."""
    if attn.rel_pos is None:
        return None
    with tf.init_scope():
        table = np.asarray(tf.convert_to_tensor(attn.rel_pos.table(*size)), np.float32).T  # [heads, T]
    (h, w), heads = size, attn.num_heads
    zero = tf.minimum(tf.abs(anchor[:1, :1]), 0.0)  # always 0, but not foldable (x * 0 would be)
    key_minus_query = attn.rel_pos.kind == "bias_tf"
    index = relative_index(h, w, key_minus_query).reshape(-1)
    if h >= 2 and w >= 2:
        grid = table.reshape(heads, 2 * h - 1, 2 * w - 1)
        if key_minus_query:  # key - query offsets: the same Toeplitz form of the reversed table
            grid = grid[:, ::-1, ::-1]
        return toeplitz_expand(_const(grid.copy()) + zero, h, w)
    bias = tf.gather(_const(table) + zero, tf.constant(index), axis=1)  # [heads, N*N]
    return tf.reshape(bias, (heads, h * w, h * w))


def _attention_core(q, k, v, bias, heads, d, mode):
    """softmax(q k^T + bias) v for 2-D q, k, v [N, heads*d] -> [N, heads*d]."""
    n = q.shape[0]
    if mode == "per_head":  # 2-D matmuls against [rows, N] operands: FULLY_CONNECTED with run-time weights
        per_head = lambda t, perm: tf.unstack(tf.transpose(tf.reshape(t, (n, heads, d)), perm))
        qs, ks, v_ts = per_head(q, (1, 0, 2)), per_head(k, (1, 0, 2)), per_head(v, (1, 2, 0))  # [N,d] / [d,N]
        logits = tf.stack([tf.matmul(qh, kh, transpose_b=True) for qh, kh in zip(qs, ks)])  # [heads, N, N]
        if bias is not None:
            logits = logits + bias
        probs = tf.unstack(tf.nn.softmax(logits, axis=-1))
        out = tf.stack([tf.matmul(p, v_t, transpose_b=True) for p, v_t in zip(probs, v_ts)])  # [heads, N, d]
        return tf.reshape(tf.transpose(out, (1, 0, 2)), (n, heads * d))
    split = lambda t, perm: tf.transpose(tf.reshape(t, (n, heads, d)), perm)
    # Both matmuls multiply by a transposed right operand ([heads, N, d] k and [heads, d, N] v): the int8
    # BATCH_MATMUL kernel is ~8x slower when it has to transpose the right operand itself.
    logits = tf.matmul(split(q, (1, 0, 2)), split(k, (1, 0, 2)), transpose_b=True)  # [heads, N, N]
    if bias is not None:
        logits = logits + bias
    out = tf.matmul(tf.nn.softmax(logits, axis=-1), split(v, (1, 2, 0)), transpose_b=True)  # [heads, N, d]
    return tf.reshape(tf.transpose(out, (1, 0, 2)), (n, heads * d))


def transformer(block, x, options):
    """TransformerBlock on 2-D tokens: folded norms / layer scales, constant relative bias."""
    attn = block.attn
    short = shortcut(block, x)
    y, s1, t1 = _norm_then(block.norm1, x)
    if block.down is not None:
        y = pool(block.down, y)  # avg pool is linear per channel: the affine still folds into qkv
    h, w = y.shape[1:3]
    n = h * w
    tokens = tf.reshape(y, (n, y.shape[-1]))
    q, k, v = (linear(lin, tokens) for lin in _qkv_linears(attn, s1, t1))
    if options.rel_bias == "table":
        bias = bias_from_table(attn, tokens, (h, w))
    else:
        bias = None if attn.rel_pos is None else _const(relative_bias(attn, (h, w)))
    out = _attention_core(q, k, v, bias, attn.num_heads, attn.dim_head, options.attention)
    proj = Conv.from_layer(attn.proj).as_matrix()
    if block.ls1 is not None:
        proj.scale_output(numpy(block.ls1.gamma))
    x2d = tf.reshape(short, (n, block.out_dim)) + linear(proj, out)

    z, s2, t2 = _norm_then(block.norm2, x2d)
    fc1 = Conv.from_layer(block.fc1).as_matrix().scale_input(s2, t2)
    fc2 = Conv.from_layer(block.fc2).as_matrix()
    if block.ls2 is not None:
        fc2.scale_output(numpy(block.ls2.gamma))
    z = linear(fc2, _activation(block.cfg["act_layer"], options)(linear(fc1, z)))
    shape = (1, h, w, block.out_dim)  # add after reshaping: a fake-quant (QAT) then sits right on the ADD
    return tf.reshape(x2d, shape) + tf.reshape(z, shape)


def layer_norm(norm, x, options):
    """A standalone LayerNormalization (the head's, [1, C]): plain normalization, then its affine as a 1x1
    depthwise conv (an int8 ADD of a near-zero shift is outside XNNPACK's scale limits; a conv bias is not)."""
    scale, shift = norm_affine(norm)
    y = normalize(x, norm.epsilon)
    channels = y.shape[-1]
    affine = Conv(np.reshape(scale, (1, 1, channels, 1)), np.asarray(shift), 1, "VALID", True)
    return tf.reshape(conv(affine, tf.reshape(y, (-1, 1, 1, channels))), y.shape)


# Layer class -> its rebuild (exact class: a subclass may change what the layer computes).
HANDLERS = {Stem: stem, MBConvBlock: mbconv, TransformerBlock: transformer, layers.LayerNormalization: layer_norm}


def known_layers(model):
    """Names of the layers the view rebuilds (the others run as they are)."""
    return [layer.name for layer in model.layers if type(layer) in HANDLERS]


def forward(model, options=None, after=None):
    """A function x [1, H, W, 3] (the model's input convention) -> model output, via the export view.

    ``after`` maps layer names to functions applied to those layers' outputs (QAT's fake-quant)."""
    options, after = (options or Options()).resolve(), after or {}

    def operation_fn(op):
        handler = HANDLERS.get(type(op))
        run_op = (lambda *args, **kwargs: op(*args, **kwargs)) if handler is None else (
            lambda x, **kwargs: handler(op, x, options))
        post = after.get(op.name)
        return run_op if post is None else (lambda *args, **kwargs: post(run_op(*args, **kwargs)))

    def run(x):
        return run_through_graph(model, x, operation_fn)

    return run


def keras_forward(model):
    """The plain Keras forward pass (no rewrites), for comparison."""
    return lambda x: model(x, training=False)
