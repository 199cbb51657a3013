"""CoAtNet architecture configs: timm's `MaxxVitCfg` as plain dicts, with timm's defaults.

A config is a dict with the keys of timm's `MaxxVitCfg`:
`embed_dim`, `depths`, `block_type`, `stem_width`, `stem_bias`, `conv_cfg`, `transformer_cfg`,
`head_hidden_size`, `weight_init`. `resolve_config` fills every missing key with timm's default and applies
timm's derived defaults, so a partial dict and the full `timm_cfg` of a timm model give the same network.

One extension: an `embed_dim` entry may be a list of per-block widths (the paper's hybrid stage 3 of
CoAtNet-6/7: MBConv blocks at one width, then Transformer blocks at a wider one inside the same stage).
"""

import copy

# Input normalization on the 0-1 scale, RGB: ImageNet's, and timm's CoAtNet default.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TIMM_MEAN, TIMM_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

CONV_DEFAULTS = {
    "block_type": "mbconv",
    "expand_ratio": 4.0,
    "expand_output": True,
    "kernel_size": 3,
    "group_size": 1,
    "pre_norm_act": False,
    "output_bias": True,
    "stride_mode": "dw",
    "pool_type": "avg2",
    "downsample_pool_type": "avg2",
    "padding": "",
    "attn_early": False,
    "attn_layer": "se",
    "attn_act_layer": "silu",
    "attn_ratio": 0.25,
    "init_values": 1e-6,
    "act_layer": "gelu",
    "norm_layer": "",
    "norm_layer_cl": "",
    "norm_eps": None,
}

TRANSFORMER_DEFAULTS = {
    "dim_head": 32,
    "head_first": True,
    "expand_ratio": 4.0,
    "expand_first": True,
    "shortcut_bias": True,
    "attn_bias": True,
    "attn_drop": 0.0,
    "proj_drop": 0.0,
    "pool_type": "avg2",
    "rel_pos_type": "bias",
    "rel_pos_dim": 512,
    "partition_ratio": 32,
    "window_size": None,
    "grid_size": None,
    "no_block_attn": False,
    "use_nchw_attn": False,
    "init_values": None,
    "act_layer": "gelu",
    "norm_layer": "layernorm2d",
    "norm_layer_cl": "layernorm",
    "norm_eps": 1e-6,
}

MODEL_DEFAULTS = {
    "embed_dim": (96, 192, 384, 768),
    "depths": (2, 3, 5, 2),
    "block_type": ("C", "C", "T", "T"),
    "stem_width": 64,
    "stem_bias": False,
    "head_hidden_size": None,
    "weight_init": "vit_eff",
}

SUPPORTED = {
    "block_type": {"C", "T"},
    "conv_block_type": {"mbconv"},
    "stride_mode": {"pool", "1x1", "dw"},
    "pool_type": {"avg2", "max2", "avg", "max"},
    "padding": {"", "same"},
    "attn_layer": {"se", "", None},
    "act_layer": {"gelu", "gelu_tanh", "silu", "swish", "relu", "tanh"},
    "norm_layer": {"batchnorm2d", "batchnorm", "layernorm2d", "layernorm"},
    "rel_pos_type": {"bias", "bias_tf", "mlp", "none", "", None},
}


def _check(value, allowed, what):
    if value not in allowed:
        shown = sorted(str(a) for a in allowed if a)
        raise ValueError(f"Unsupported {what}={value!r}; supported: {shown}.")


def resolve_config(cfg):
    """Returns a full config dict from a (possibly partial) timm `MaxxVitCfg` dict. Raises on unknown keys."""
    cfg = copy.deepcopy(dict(cfg))
    unknown = set(cfg) - set(MODEL_DEFAULTS) - {"conv_cfg", "transformer_cfg"}
    if unknown:
        raise ValueError(f"Unknown config keys {sorted(unknown)}; expected keys of timm's MaxxVitCfg.")
    out = {**MODEL_DEFAULTS, **cfg}
    conv = {**CONV_DEFAULTS, **(cfg.get("conv_cfg") or {})}
    tfm = {**TRANSFORMER_DEFAULTS, **(cfg.get("transformer_cfg") or {})}
    for part, defaults, name in ((conv, CONV_DEFAULTS, "conv_cfg"), (tfm, TRANSFORMER_DEFAULTS, "transformer_cfg")):
        extra = set(part) - set(defaults)
        if extra:
            raise ValueError(f"Unknown {name} keys {sorted(extra)}.")
    # Derived defaults, as timm's MaxxVitConvCfg.__post_init__.
    use_mbconv = conv["block_type"] == "mbconv"
    conv["norm_layer"] = conv["norm_layer"] or ("batchnorm2d" if use_mbconv else "layernorm2d")
    if conv["norm_eps"] is None:
        conv["norm_eps"] = 1e-5 if use_mbconv else 1e-6
    conv["downsample_pool_type"] = conv["downsample_pool_type"] or conv["pool_type"]
    out["conv_cfg"], out["transformer_cfg"] = conv, tfm

    n = len(out["depths"])
    out["depths"] = tuple(int(d) for d in out["depths"])
    out["embed_dim"] = tuple(tuple(d) if isinstance(d, (list, tuple)) else int(d) for d in out["embed_dim"])
    block_type = out["block_type"]
    out["block_type"] = tuple(tuple(b) if isinstance(b, (list, tuple)) else b for b in block_type)
    sw = out["stem_width"]
    out["stem_width"] = tuple(sw) if isinstance(sw, (list, tuple)) else (int(sw), int(sw))
    if len(out["embed_dim"]) != n or len(out["block_type"]) != n:
        raise ValueError(
            f"embed_dim ({len(out['embed_dim'])}), depths ({n}) and block_type ({len(out['block_type'])}) "
            "must have one entry per stage.")
    for types in out["block_type"]:
        for t in (types if isinstance(types, tuple) else (types,)):
            _check(t, SUPPORTED["block_type"], "block_type")
    _check(conv["block_type"], SUPPORTED["conv_block_type"], "conv_cfg.block_type")
    _check(conv["stride_mode"], SUPPORTED["stride_mode"], "conv_cfg.stride_mode")
    for key in ("pool_type", "downsample_pool_type"):
        _check(conv[key], SUPPORTED["pool_type"], f"conv_cfg.{key}")
    _check(tfm["pool_type"], SUPPORTED["pool_type"], "transformer_cfg.pool_type")
    _check(conv["padding"], SUPPORTED["padding"], "conv_cfg.padding")
    _check(conv["attn_layer"], SUPPORTED["attn_layer"], "conv_cfg.attn_layer")
    for part, name in ((conv, "conv_cfg"), (tfm, "transformer_cfg")):
        _check(part["act_layer"], SUPPORTED["act_layer"], f"{name}.act_layer")
        _check(part["norm_layer"], SUPPORTED["norm_layer"], f"{name}.norm_layer")
    _check(conv["attn_act_layer"], SUPPORTED["act_layer"], "conv_cfg.attn_act_layer")
    _check(tfm["rel_pos_type"], SUPPORTED["rel_pos_type"], "transformer_cfg.rel_pos_type")
    return out


def block_plan(cfg, stem_stride=2):
    """Flattens a resolved config into one dict per block.

    Returns a list of dicts with keys `stage`, `index`, `type` ('C'/'T'), `in_dim`, `out_dim`, `stride`
    and `reduction` (the block's output stride relative to the input image).
    """
    plan = []
    in_dim = cfg["stem_width"][-1]
    reduction = stem_stride
    for s, (depth, dims, types) in enumerate(zip(cfg["depths"], cfg["embed_dim"], cfg["block_type"])):
        dims = dims if isinstance(dims, tuple) else (dims,) * depth
        types = types if isinstance(types, tuple) else (types,)
        types = types + (types[-1],) * (depth - len(types))  # timm's extend_tuple
        if len(dims) != depth:
            raise ValueError(f"Stage {s}: {len(dims)} per-block widths for depth {depth}.")
        for j in range(depth):
            stride = 2 if j == 0 else 1
            reduction *= stride
            plan.append({"stage": s, "index": j, "type": types[j], "in_dim": in_dim, "out_dim": dims[j],
                         "stride": stride, "reduction": reduction})
            in_dim = dims[j]
    return plan
