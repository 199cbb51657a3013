"""Relative-position tables at another feature-map size: timm's resize as one linear map per offset axis.

A table is trained for an H0 x W0 map: a grid of (2H0-1) x (2W0-1) offsets. For an h x w map it is resized to
(2h-1) x (2w-1) by `rows @ grid @ cols.T`, with `rows = interpolation_matrix(2H0-1, 2h-1)` (and `cols` likewise):
linear between geometrically spaced source offsets, clamped at the ends, timm's `resize_rel_pos_bias_table`
(non-scipy path). The weight loader (`timm_weights.resize_bias_table`) and the layer at run time use the same
matrices, so running a model at size S equals loading its checkpoint into a model built at S.

Two forms of each function: NumPy (the reference, for every static size on every backend) and `*_in_graph`
(keras ops on TensorFlow, for sizes only known when the graph runs: `tf.function` with a [None, None] input
signature, `reduce_retracing`, SavedModel). The graph forms compute in float64 and equal the NumPy ones
(`tests/test_run_time_size.py`).
"""

import functools

import numpy as np
from keras import ops

BISECTION = (1.01, 1.5, 1e-6)  # timm's search interval for the geometric ratio, and its stopping width


def _bisection_steps():
    """How many halvings timm's `while right - left > 1e-6` loop makes: 19, whatever the sizes."""
    left, right, width = BISECTION
    steps, span = 0, right - left
    while span > width:
        span, steps = span / 2.0, steps + 1
    return steps


def _ratio(src, dst):
    """timm's geometric ratio q: (1 - q^(src//2)) / (1 - q) = dst//2, by bisection on [1.01, 1.5]."""
    left, right, width = BISECTION
    while right - left > width:
        q = (left + right) / 2.0
        if (1.0 - q ** (src // 2)) / (1.0 - q) > dst // 2:
            right = q
        else:
            left = q
    return q


def _geometric_positions(src, q):
    """[src] source offsets 0, +-1, +-(1+q), +-(1+q+q^2), ... in increasing order (src odd)."""
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return np.array([-d for d in reversed(dis)] + [0.0] + dis)


@functools.lru_cache(maxsize=256)
def interpolation_matrix(src, dst):
    """[dst, src] float64 matrix M with M @ v = timm's resize of a src-long offset axis v to dst entries. Each
    row sums to 1. Cached; treat the result as read-only."""
    xs = _geometric_positions(src, _ratio(src, dst))
    targets = np.arange(-(dst // 2), dst // 2 + 0.1)
    m = np.stack([np.interp(targets, xs, np.eye(src)[k]) for k in range(src)], axis=1)
    m.flags.writeable = False
    return m


def interpolation_matrix_in_graph(src, dst):
    """`interpolation_matrix(src, dst)` for a static int `src` and a scalar int tensor `dst`: a [dst, src]
    float64 tensor."""
    half_src = src // 2
    half_dst = ops.cast(dst // 2, "float64")
    left, right = ops.convert_to_tensor(BISECTION[0], "float64"), ops.convert_to_tensor(BISECTION[1], "float64")
    q = left
    for _ in range(_bisection_steps()):
        q = (left + right) / 2.0
        above = (1.0 - ops.power(q, float(half_src))) / (1.0 - q) > half_dst
        right, left = ops.where(above, q, right), ops.where(above, left, q)
    dis, cur = [], ops.convert_to_tensor(1.0, "float64")
    for i in range(half_src):
        dis.append(cur)
        cur = cur + ops.power(q, float(i + 1))
    zero = ops.zeros((), "float64")
    xs = ops.stack([-d for d in reversed(dis)] + [zero] + dis)  # [src]
    targets = ops.cast(ops.arange(dst), "float64") - half_dst  # [dst]
    # np.interp: the interval [xs[j], xs[j+1]] holding t, clamped to the ends (fraction clipped to [0, 1]).
    below = ops.sum(ops.cast(targets[:, None] >= xs[None, :], "int32"), axis=1) - 1
    j = ops.clip(below, 0, max(src - 2, 0))
    if src == 1:
        return ops.ones((dst, 1), "float64")
    x0, x1 = ops.take(xs, j), ops.take(xs, j + 1)
    frac = ops.clip((targets - x0) / (x1 - x0), 0.0, 1.0)[:, None]
    return ops.one_hot(j, src, dtype="float64") * (1.0 - frac) + ops.one_hot(j + 1, src, dtype="float64") * frac


def resize_grid(grid, dst_shape):
    """Resizes one [src_h, src_w] NumPy offset grid to `dst_shape` (computed in float64, returned in the grid's
    dtype)."""
    (sh, sw), (dh, dw) = grid.shape, dst_shape
    rows, cols = interpolation_matrix(sh, dh), interpolation_matrix(sw, dw)
    return (rows @ np.asarray(grid, np.float64) @ cols.T).astype(grid.dtype)
