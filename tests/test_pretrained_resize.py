"""Relative-position table resizing (used when weights load at another resolution) against a direct bilinear
interpolation written here: source offsets placed geometrically as timm does (0, +-1, +-(1+q), ... with the
outermost at dst//2 and q kept in [1.01, 1.5]), targets at integer offsets clamped to the source span."""

import types

import numpy as np
import pytest

from keras_coatnet.layers.table_resize import interpolation_matrix, resize_grid
from keras_coatnet.timm_weights import resize_bias_table


def source_positions(src, dst):
    """Offsets of a src-long source axis when resized to dst: q solves 1 + q + ... + q^(n-1) = dst//2."""
    n = src // 2
    roots = np.roots([1.0] * (n - 1) + [1.0 - dst // 2])
    q = float(np.clip(max(r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0), 1.01, 1.5))
    side = np.cumsum(q ** np.arange(n))
    return np.concatenate([-side[::-1], [0.0], side])


def bilinear(grid, dst):
    """Direct bilinear interpolation of grid [sh, sw] at the integer offsets of a dst-shaped grid."""
    (sh, sw), (dh, dw) = grid.shape, dst
    ys, xs = source_positions(sh, dh), source_positions(sw, dw)
    ty = np.clip(np.arange(dh) - dh // 2, ys[0], ys[-1])
    tx = np.clip(np.arange(dw) - dw // 2, xs[0], xs[-1])
    i = np.clip(np.searchsorted(ys, ty, side="right") - 1, 0, sh - 2)
    j = np.clip(np.searchsorted(xs, tx, side="right") - 1, 0, sw - 2)
    wy = ((ty - ys[i]) / (ys[i + 1] - ys[i]))[:, None]
    wx = ((tx - xs[j]) / (xs[j + 1] - xs[j]))[None, :]
    i, j = i[:, None], j[None, :]
    return ((1 - wy) * (1 - wx) * grid[i, j] + (1 - wy) * wx * grid[i, j + 1]
            + wy * (1 - wx) * grid[i + 1, j] + wy * wx * grid[i + 1, j + 1])


@pytest.mark.parametrize("src, dst", [((13, 13), (23, 23)), ((13, 13), (23, 31)), ((27, 27), (47, 47)),
                                      ((27, 27), (13, 13)), ((7, 7), (11, 15))])
def test_resize_grid_is_bilinear_between_geometric_offsets(src, dst):
    grid = np.random.default_rng(0).normal(size=src).astype("float32")
    out = resize_grid(grid, dst)
    assert out.shape == dst and out.dtype == np.float32
    np.testing.assert_allclose(out, bilinear(grid.astype("float64"), dst), rtol=0, atol=2e-4)
    assert out[dst[0] // 2, dst[1] // 2] == pytest.approx(grid[src[0] // 2, src[1] // 2], abs=1e-6)  # offset 0


def test_resize_bias_table_per_head_in_offset_order():
    """'bias' tables are [(2H-1)(2W-1), heads], row-major over (dy, dx): a 7x7 window loaded for 12x16."""
    heads, rng = 3, np.random.default_rng(1)
    table = rng.normal(size=(13 * 13, heads)).astype("float32")
    out = resize_bias_table(table, types.SimpleNamespace(size=(12, 16), kind="bias"))
    assert out.shape == (23 * 31, heads)
    for h in range(heads):
        ref = bilinear(table[:, h].reshape(13, 13).astype("float64"), (23, 31))
        np.testing.assert_allclose(out[:, h].reshape(23, 31), ref, rtol=0, atol=2e-4)


def test_resize_bias_tf_table():
    """'bias_tf' tables are [heads, 2H-1, 2W-1]."""
    table = np.random.default_rng(2).normal(size=(2, 7, 7)).astype("float32")
    out = resize_bias_table(table, types.SimpleNamespace(size=(6, 4), kind="bias_tf"))
    assert out.shape == (2, 11, 7)
    for h in range(2):
        np.testing.assert_allclose(out[h], bilinear(table[h].astype("float64"), (11, 7)), rtol=0, atol=2e-4)


def test_non_square_source_table_is_refused():
    with pytest.raises(ValueError, match="non-square relative position table of 15 entries"):
        resize_bias_table(np.zeros((15, 2), "float32"), types.SimpleNamespace(size=(4, 4), kind="bias"))


@pytest.mark.parametrize("src, dst", [(13, 23), (27, 13), (7, 15)])
def test_interpolation_matrix_is_a_convex_linear_resize(src, dst):
    m = interpolation_matrix(src, dst)
    assert m.shape == (dst, src) and np.all(m >= 0)
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)  # constants stay constant
    v = np.random.default_rng(1).normal(size=src)
    targets = np.arange(dst) - dst // 2
    np.testing.assert_allclose(m @ v, np.interp(targets, source_positions(src, dst), v), atol=1e-5)
