"""What each CoAtNet variant is: its architecture, as data. The one architecture table (timm's `model_cfgs`).

- `PAPER_CONFIGS`, `TIMM_CONFIGS`, `SMALL_CONFIGS`: architecture configs, each a partial timm `MaxxVitCfg`
  dict (see `config.resolve_config`, which fills in the defaults). timm's two families of hand-tuned configs
  ("rw") share most settings; `_rw_coat` and `_rw_max` hold those shared settings and each variant states only
  what differs.
- `MODELS`: every model name -> {"config": architecture config, "input_size": native (H, W), "family": 'paper',
  'timm' or 'small'}; `list_models` and `get_entry` read it.

How a published checkpoint's images are prepared (mean, std, crop: timm's `default_cfgs`) is not here: that
table is `pretrained.WEIGHTS`.
"""


def _rw_coat(stride_mode="pool", pool_type="avg2", conv_attn_early=False, conv_attn_act_layer="relu",
             transformer_shortcut_bias=True, transformer_norm_layer="layernorm2d", init_values=None,
             rel_pos_type="bias", rel_pos_dim=512):
    """timm's early CoAtNet settings: pre-norm act, expansion from input width, no conv output bias, silu."""
    return {
        "conv_cfg": {"stride_mode": stride_mode, "pool_type": pool_type, "pre_norm_act": True,
                     "expand_output": False, "output_bias": False, "attn_early": conv_attn_early,
                     "attn_act_layer": conv_attn_act_layer, "act_layer": "silu"},
        "transformer_cfg": {"expand_first": False, "shortcut_bias": transformer_shortcut_bias,
                            "pool_type": pool_type, "init_values": init_values,
                            "norm_layer": transformer_norm_layer, "rel_pos_type": rel_pos_type,
                            "rel_pos_dim": rel_pos_dim},
    }


def _rw_max(stride_mode="dw", rel_pos_type="bias", rel_pos_dim=512):
    """timm's MaxViT-era settings as used by its nano/pico CoAtNets."""
    return {
        "conv_cfg": {"stride_mode": stride_mode, "expand_output": False, "output_bias": True,
                     "attn_ratio": 0.25, "act_layer": "silu"},
        "transformer_cfg": {"expand_first": False, "rel_pos_type": rel_pos_type, "rel_pos_dim": rel_pos_dim},
    }


_SMALL = {"embed_dim": (64, 128, 256, 512), "depths": (3, 4, 6, 3), "stem_width": (32, 64)}
_RW0 = {"embed_dim": (96, 192, 384, 768), "depths": (2, 3, 7, 2), "stem_width": (32, 64)}
_RW1 = {"embed_dim": (96, 192, 384, 768), "depths": (2, 6, 14, 2), "stem_width": (32, 64)}
_RW2 = {"embed_dim": (128, 256, 512, 1024), "depths": (2, 6, 14, 2), "stem_width": (64, 128)}
_RW3 = {"embed_dim": (192, 384, 768, 1536), "depths": (2, 6, 14, 2), "stem_width": (96, 192)}

# timm `model_cfgs` for CoAtNet (name without the resolution suffix).
TIMM_CONFIGS = {
    "coatnet_pico_rw": {"embed_dim": (64, 128, 256, 512), "depths": (2, 3, 5, 2), "stem_width": (32, 64),
                        **_rw_max()},
    "coatnet_nano_rw": {**_SMALL, **_rw_max(stride_mode="pool")},
    "coatnet_0_rw": {**_RW0, **_rw_coat(conv_attn_early=True, transformer_shortcut_bias=False)},
    "coatnet_1_rw": {**_RW1, **_rw_coat(stride_mode="dw", conv_attn_early=True,
                                        transformer_shortcut_bias=False)},
    "coatnet_2_rw": {**_RW2, **_rw_coat(stride_mode="dw", conv_attn_act_layer="silu")},
    "coatnet_3_rw": {**_RW3, **_rw_coat(stride_mode="dw", conv_attn_act_layer="silu", init_values=1e-6)},
    "coatnet_bn_0_rw": {**_RW0, **_rw_coat(stride_mode="dw", conv_attn_early=True,
                                           transformer_shortcut_bias=False,
                                           transformer_norm_layer="batchnorm2d")},
    "coatnet_rmlp_nano_rw": {**_SMALL, **_rw_max(rel_pos_type="mlp", rel_pos_dim=384)},
    "coatnet_rmlp_0_rw": {**_RW0, **_rw_coat(stride_mode="dw", rel_pos_type="mlp")},
    "coatnet_rmlp_1_rw": {**_RW1, **_rw_coat(pool_type="max", conv_attn_early=True,
                                             transformer_shortcut_bias=False, rel_pos_type="mlp",
                                             rel_pos_dim=384)},
    "coatnet_rmlp_1_rw2": {**_RW1, **_rw_coat(stride_mode="dw", rel_pos_type="mlp", rel_pos_dim=512)},
    "coatnet_rmlp_2_rw": {**_RW2, **_rw_coat(stride_mode="dw", conv_attn_act_layer="silu", init_values=1e-6,
                                             rel_pos_type="mlp")},
    "coatnet_rmlp_3_rw": {**_RW3, **_rw_coat(stride_mode="dw", conv_attn_act_layer="silu", init_values=1e-6,
                                             rel_pos_type="mlp")},
    "coatnet_nano_cc": {**_SMALL, "block_type": ("C", "C", ("C", "T"), ("C", "T")), **_rw_coat()},
}


def _paper(stem, dims, depths, head=None, block_type=("C", "C", "T", "T")):
    """A paper-style CoAtNet: timm's default block settings, pre-logits head as wide as the last stage."""
    last = dims[-1]
    return {"stem_width": stem, "embed_dim": dims, "depths": depths, "block_type": block_type,
            "head_hidden_size": head or last}


def _hybrid_s3(n_conv, conv_dim, n_tfm, tfm_dim):
    """The paper's CoAtNet-6/7 stage 3: `n_conv` MBConv blocks, then `n_tfm` Transformer blocks (wider)."""
    return {"dims": (conv_dim,) * n_conv + (tfm_dim,) * n_tfm, "types": ("C",) * n_conv + ("T",) * n_tfm,
            "depth": n_conv + n_tfm}


_S3_6 = _hybrid_s3(8, 768, 42, 1536)
_S3_7 = _hybrid_s3(8, 1024, 42, 2048)

# The paper's Table 3 (S0 stem width, S1..S4 widths and depths). 0-5 equal timm's coatnet_{0..5}.
PAPER_CONFIGS = {
    "coatnet_0": _paper(64, (96, 192, 384, 768), (2, 3, 5, 2)),
    "coatnet_1": _paper(64, (96, 192, 384, 768), (2, 6, 14, 2)),
    "coatnet_2": _paper(128, (128, 256, 512, 1024), (2, 6, 14, 2)),
    "coatnet_3": _paper(192, (192, 384, 768, 1536), (2, 6, 14, 2)),
    "coatnet_4": _paper(192, (192, 384, 768, 1536), (2, 12, 28, 2)),
    "coatnet_5": _paper(192, (256, 512, 1280, 2048), (2, 12, 28, 2)),
    "coatnet_6": _paper(192, (192, 384, _S3_6["dims"], 2048), (2, 4, _S3_6["depth"], 2),
                        block_type=("C", "C", _S3_6["types"], "T")),
    "coatnet_7": _paper(192, (256, 512, _S3_7["dims"], 3072), (2, 4, _S3_7["depth"], 2),
                        block_type=("C", "C", _S3_7["types"], "T")),
}

# Small models of our own for demos, tests and tiny data sets (paper-style blocks).
SMALL_CONFIGS = {
    "coatnet_micro": _paper(16, (24, 48, 64, 96), (1, 1, 2, 1), head=96),
}


# --- the model table -------------------------------------------------------------------------------------------

def _entry(config, size=224, family="timm"):
    return {"config": config, "input_size": (size, size), "family": family}


MODELS = {
    **{name: _entry(PAPER_CONFIGS[name], family="paper") for name in PAPER_CONFIGS},
    # timm's names for the paper configs: the same networks.
    **{f"{name}_224": _entry(PAPER_CONFIGS[name]) for name in
       ("coatnet_0", "coatnet_1", "coatnet_2", "coatnet_3", "coatnet_4", "coatnet_5")},
    **{f"{name}_224": _entry(cfg) for name, cfg in TIMM_CONFIGS.items()},
    "coatnet_rmlp_2_rw_384": _entry(TIMM_CONFIGS["coatnet_rmlp_2_rw"], size=384),
    **{name: _entry(cfg, size=32, family="small") for name, cfg in SMALL_CONFIGS.items()},
}


def list_models(family=None):
    """Sorted model names; `family` in {None, 'paper', 'timm', 'small'} filters them."""
    return sorted(n for n, e in MODELS.items() if family is None or e["family"] == family)


def get_entry(name):
    """The `MODELS` entry of `name`; raises ValueError naming the closest names if it has none."""
    if name not in MODELS:
        import difflib

        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} See keras_coatnet.list_models().")
    return MODELS[name]
