"""Every CoAtNet layer through the shared harness (tests/harness.py): config round trip, symbolic vs eager,
save/load, a training step's gradients, mixed precision."""

import pytest
from harness import run_layer_test

from keras_coatnet.builder import block_args
from keras_coatnet.config import resolve_config
from keras_coatnet.layers import (
    Downsample2d,
    LayerScale,
    MBConvBlock,
    Normalize,
    Pool2d,
    RelativeAttention2d,
    SqueezeExcite,
    Stem,
    TransformerBlock,
)
from keras_coatnet.variants import TIMM_CONFIGS

RW = resolve_config(TIMM_CONFIGS["coatnet_0_rw"])
RMLP = resolve_config(TIMM_CONFIGS["coatnet_rmlp_nano_rw"])

CASES = {
    "stem": (Stem, dict(widths=(8, 16)), (2, 16, 16, 3), (2, 8, 8, 16)),
    "mbconv_stride2": (MBConvBlock, dict(in_dim=8, out_dim=16, stride=2, **block_args(MBConvBlock, RW["conv_cfg"])),
                       (2, 8, 8, 8), (2, 4, 4, 16)),
    "mbconv_odd": (MBConvBlock, dict(in_dim=8, out_dim=8, stride=2, **block_args(MBConvBlock, RMLP["conv_cfg"])),
                   (2, 7, 9, 8), (2, 4, 5, 8)),
    "transformer_bias": (TransformerBlock, dict(in_dim=16, out_dim=32, stride=2, size=(2, 2),
                                                **{**block_args(TransformerBlock, RW["transformer_cfg"]),
                                                   "dim_head": 8}), (2, 4, 4, 16), (2, 2, 2, 32)),
    "transformer_mlp": (TransformerBlock, dict(in_dim=16, out_dim=16, stride=1, size=(3, 3),
                                               **{**block_args(TransformerBlock, RMLP["transformer_cfg"]),
                                                  "dim_head": 8, "rel_pos_dim": 16}), (2, 3, 3, 16), (2, 3, 3, 16)),
    "mbconv_defaults": (MBConvBlock, dict(in_dim=8, out_dim=8), (2, 5, 5, 8), (2, 5, 5, 8)),
    "transformer_defaults": (TransformerBlock, dict(in_dim=32, out_dim=32, size=(2, 2)), (2, 2, 2, 32),
                             (2, 2, 2, 32)),
    "attention": (RelativeAttention2d, dict(in_dim=16, out_dim=16, size=(3, 3), dim_head=8), (2, 3, 3, 16),
                  (2, 3, 3, 16)),
    "squeeze_excite": (SqueezeExcite, dict(reduced_dim=4), (2, 4, 4, 16), (2, 4, 4, 16)),
    "downsample": (Downsample2d, dict(out_dim=12), (2, 6, 6, 8), (2, 3, 3, 12)),
    "layer_scale": (LayerScale, dict(init_values=1e-2), (2, 3, 3, 8), (2, 3, 3, 8)),
}
NOT_TRAINABLE = {
    "normalize": (Normalize, dict(mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4)), (2, 4, 4, 3), (2, 4, 4, 3)),
    "pool": (Pool2d, dict(pool_type="avg2", ceil_mode=True), (2, 5, 5, 4), (2, 3, 3, 4)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_contract(name):
    cls, kwargs, shape, expected = CASES[name]
    run_layer_test(cls, kwargs, shape, expected)


@pytest.mark.parametrize("name", sorted(NOT_TRAINABLE))
def test_weightless_layer_contract(name):
    cls, kwargs, shape, expected = NOT_TRAINABLE[name]
    run_layer_test(cls, kwargs, shape, expected, trainable=False)


@pytest.mark.parametrize("cls,part", [(MBConvBlock, "conv_cfg"), (TransformerBlock, "transformer_cfg")])
def test_block_defaults_are_timms(cls, part):
    """A block's keyword defaults are timm's resolved defaults (config.py), so a bare block is timm's block."""
    import inspect

    defaults = {n: p.default for n, p in inspect.signature(cls).parameters.items() if n in cls.ARGS}
    assert set(defaults) == set(cls.ARGS)
    assert defaults == block_args(cls, resolve_config({})[part])
