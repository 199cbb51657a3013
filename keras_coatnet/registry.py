"""Model registry: every model name -> its architecture config, native input size and family. Data only; the
checkpoints' eval preprocessing (mean, std, crop) is in `pretrained.WEIGHTS`."""

from keras_coatnet.variants import PAPER_CONFIGS, SMALL_CONFIGS, TIMM_CONFIGS


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
    if name not in MODELS:
        import difflib

        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} See keras_coatnet.list_models().")
    return MODELS[name]
