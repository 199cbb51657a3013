"""Writes extra timm reference fixtures (tests/fixtures/timm_extra/) in the layout of tests/fixtures/timm/.

Needs PyTorch and timm (not project dependencies): run it in a separate environment, e.g.
    python -m venv /tmp/timmenv && /tmp/timmenv/bin/pip install torch timm safetensors numpy
    /tmp/timmenv/bin/python tools/make_timm_fixtures.py tests/fixtures/timm_extra
Each fixture is a small random timm CoAtNet (shrunk from a named timm config, optionally with config
overrides) with randomized norm statistics, affine parameters, layer scales and relative-position weights,
its inputs and timm's eval-mode logits and per-stage outputs (NHWC). A fixture with `load_size` holds a
checkpoint made at `img_size` and timm's outputs after loading it at `load_size` (timm's table resize).

`--sizes DIR` writes size fixtures (SIZES) instead: one checkpoint made at `img_size` and, for each run-time
size, timm's outputs from a model built at that size and loaded from it with `checkpoint_filter_fn`:
    /tmp/timmenv/bin/python tools/make_timm_fixtures.py --sizes tests/fixtures/timm_sizes
`--chans DIR` writes input-channel fixtures (CHANS) instead: one 3-channel checkpoint and, for each in_chans,
timm's outputs from a model built with that in_chans and loaded from it as timm's pretrained loading does
(checkpoint_filter_fn, then adapt_input_conv on the stem's first conv):
    /tmp/timmenv/bin/python tools/make_timm_fixtures.py --chans tests/fixtures/timm_chans
Size and channel fixtures are seeded, so they are reproducible (the other fixtures take timm's unseeded init).

`--full` writes full-size (unshrunk) fixtures instead, large files not meant for the repository; point the
parity test at them with `KERAS_COATNET_EXTRA_FIXTURES=DIR pytest tests/test_parity.py`.
"""

import argparse
import dataclasses
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file
from timm.models import maxxvit
from timm.models._manipulate import adapt_input_conv

SHRINK = {"embed_dim": (16, 32, 64, 96), "depths": (1, 2, 2, 1)}

FULL_SIZE = {
    "coatnet_0_224": ("coatnet_0", (224, 224), {}, None),
    "coatnet_0_192x256": ("coatnet_0", (192, 256), {}, None),
    "coatnet_rmlp_1_rw_224": ("coatnet_rmlp_1_rw", (224, 224), {}, None),
    "coatnet_0_rw_256x192": ("coatnet_0_rw", (256, 192), {}, None),
    "coatnet_bn_0_rw_224": ("coatnet_bn_0_rw", (224, 224), {}, None),
    "coatnet_rmlp_nano_rw_224_at_320x256": ("coatnet_rmlp_nano_rw", (224, 224), {}, (320, 256)),
}

# name: (timm config, input (H, W), extra overrides of conv_cfg / transformer_cfg / top-level, load size)
FIXTURES = {
    "tiny_coatnet_0_nonsquare": ("coatnet_0", (64, 96), {}, None),
    "tiny_coatnet_rmlp_1_rw_maxpool": ("coatnet_rmlp_1_rw", (96, 64), {}, None),
    "tiny_coatnet_nano_cc_mixed": ("coatnet_nano_cc", (64, 64), {"depths": (1, 2, 3, 2)}, None),
    "tiny_coatnet_pico_rw": ("coatnet_pico_rw", (64, 64), {}, None),
    "tiny_coatnet_3_rw_layerscale": ("coatnet_3_rw", (64, 64), {}, None),
    "tiny_coatnet_1x1_avg3": ("coatnet_0", (64, 64),
                              {"conv_cfg": {"stride_mode": "1x1", "pool_type": "avg"},
                               "transformer_cfg": {"pool_type": "avg"}}, None),
    "tiny_coatnet_tf_style": ("coatnet_0", (64, 64),
                              {"conv_cfg": {"norm_eps": 1e-3, "act_layer": "gelu_tanh", "padding": "same"},
                               "transformer_cfg": {"norm_eps": 1e-5, "act_layer": "gelu_tanh", "head_first": False,
                                                   "rel_pos_type": "bias_tf"}}, None),
    "tiny_coatnet_0_rw_resized": ("coatnet_0_rw", (64, 64), {}, (96, 128)),
    "tiny_coatnet_tf_style_resized": ("coatnet_0", (64, 64),
                                      {"transformer_cfg": {"head_first": False, "rel_pos_type": "bias_tf"}},
                                      (128, 96)),
}

TF_STYLE = {"transformer_cfg": {"head_first": False, "rel_pos_type": "bias_tf"}}
# name: (timm config, checkpoint (H, W), overrides, run-time sizes). timm 1.0.31 runs these configs only where
# every side is 32k or 32k - 1 (also 32k + 1 with stride_mode 'pool', as coatnet_0_rw); other sizes fail
# with a shape mismatch, so the odd fixture uses those
SIZES = {
    "tiny_coatnet_0_rw_sizes": ("coatnet_0_rw", (64, 64), {}, [(64, 64), (96, 96), (64, 96)]),
    "tiny_coatnet_rmlp_nano_rw_sizes": ("coatnet_rmlp_nano_rw", (64, 64), {}, [(64, 64), (96, 96), (64, 96)]),
    "tiny_coatnet_tf_style_sizes": ("coatnet_0", (64, 64), TF_STYLE, [(64, 64), (96, 96), (64, 96)]),
    "tiny_coatnet_0_rw_odd": ("coatnet_0_rw", (64, 64), {}, [(97, 95), (65, 63)]),
}

# name: (timm config, (H, W), overrides, in_chans values); the checkpoint is 3-channel
CHANS = {
    "tiny_coatnet_0_rw_chans": ("coatnet_0_rw", (64, 64), {}, [1, 2, 4, 5]),
}


def make_cfg(like, overrides, shrink=True):
    base = maxxvit.model_cfgs[like]
    if not shrink:
        return dataclasses.replace(base, **{k: v for k, v in overrides.items()
                                            if k not in ("conv_cfg", "transformer_cfg")})
    conv = dataclasses.replace(base.conv_cfg, **overrides.get("conv_cfg", {}))
    tfm = dataclasses.replace(base.transformer_cfg, **overrides.get("transformer_cfg", {}))
    top = {k: v for k, v in overrides.items() if k not in ("conv_cfg", "transformer_cfg")}
    stem = (8, 16) if isinstance(base.stem_width, (tuple, list)) else 16
    head = 96 if base.head_hidden_size else None
    return dataclasses.replace(base, **{**SHRINK, "stem_width": stem, "head_hidden_size": head, **top},
                               conv_cfg=conv, transformer_cfg=tfm)


def randomize(model, gen):
    """Non-trivial values for everything a faithful port must get right."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            r = lambda *s: torch.randn(*s, generator=gen)
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(0.1 * r(t.shape))
            elif name.endswith("gamma"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif "relative_position_bias_table" in name:
                t.copy_(0.5 * r(t.shape))
            elif t.ndim == 1:  # norm weights
                t.copy_(1.0 + 0.2 * r(t.shape))


def forward_nhwc(model, x):
    feats = []
    with torch.no_grad():
        y = model.stem(x)
        for stage in model.stages:
            y = stage(y)
            feats.append(y.permute(0, 2, 3, 1).numpy())
        logits = model(x).numpy()
    return logits, feats


def write_io(path, file_name, model, x):
    """Writes timm's eval outputs for x [B, C, H, W] to path/file_name (NHWC arrays); returns (logits, stages)."""
    logits, feats = forward_nhwc(model, x)
    arrays = {"images_nhwc": x.permute(0, 2, 3, 1).numpy(), "logits": logits}
    arrays.update({f"stage{i}_nhwc": f for i, f in enumerate(feats)})
    np.savez_compressed(os.path.join(path, file_name), **arrays)
    return logits, feats


def write_fixture(out_dir, name, like, size, overrides, load_size, seed=0, shrink=True):
    gen = torch.Generator().manual_seed(seed)
    cfg = make_cfg(like, overrides, shrink)
    model = maxxvit.MaxxVit(cfg, img_size=size, num_classes=10).eval()
    randomize(model, gen)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    eval_size = load_size or size
    if load_size:
        model = maxxvit.MaxxVit(cfg, img_size=load_size, num_classes=10).eval()
        model.load_state_dict(maxxvit.checkpoint_filter_fn(dict(state), model))
    x = torch.randn(2, 3, *eval_size, generator=gen)
    path = os.path.join(out_dir, name)
    os.makedirs(path, exist_ok=True)
    save_file(state, os.path.join(path, "model.safetensors"))
    logits, feats = write_io(path, "io.npz", model, x)
    meta = {"name": name, "like": like, "img_size": list(size), "num_classes": 10,
            "timm_cfg": json.loads(json.dumps(dataclasses.asdict(cfg))),
            "input_note": "images_nhwc are already normalized; feed them with preprocessing off"}
    if load_size:
        meta["load_size"] = list(load_size)
        meta["input_note"] += "; the checkpoint was made at img_size and timm's outputs are at load_size"
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{name}: logits {logits.shape}, stages {[f.shape for f in feats]}")


def write_seeded_checkpoint(out_dir, name, like, size, overrides, seed):
    """Writes a seeded random 3-channel timm checkpoint to out_dir/name/model.safetensors.

    Returns (cfg, state dict, fixture folder, generator to draw the inputs from)."""
    torch.manual_seed(seed)  # timm's own init of the conv / linear weights
    gen = torch.Generator().manual_seed(seed)
    cfg = make_cfg(like, overrides)
    model = maxxvit.MaxxVit(cfg, img_size=size, num_classes=10).eval()
    randomize(model, gen)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = os.path.join(out_dir, name)
    os.makedirs(path, exist_ok=True)
    save_file(state, os.path.join(path, "model.safetensors"))
    return cfg, state, path, gen


def write_config(path, name, like, size, cfg, **extra):
    meta = {"name": name, "like": like, "img_size": list(size), "num_classes": 10,
            "timm_cfg": json.loads(json.dumps(dataclasses.asdict(cfg))), **extra}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(meta, f, indent=1)


def write_sizes_fixture(out_dir, name, like, size, overrides, run_sizes, seed=0):
    cfg, state, path, gen = write_seeded_checkpoint(out_dir, name, like, size, overrides, seed)
    for h, w in run_sizes:
        model = maxxvit.MaxxVit(cfg, img_size=(h, w), num_classes=10).eval()
        model.load_state_dict(maxxvit.checkpoint_filter_fn(dict(state), model))
        x = torch.randn(2, 3, h, w, generator=gen)
        logits, feats = write_io(path, f"io_{h}x{w}.npz", model, x)
        print(f"{name} at {h}x{w}: logits {logits.shape}, stages {[f.shape[1:3] for f in feats]}")
    write_config(path, name, like, size, cfg, sizes=[list(s) for s in run_sizes],
                 input_note="images_nhwc are already normalized; feed them with preprocessing off; the checkpoint "
                            "was made at img_size, io_{H}x{W}.npz are timm's outputs from a model built at HxW and "
                            "loaded from it with checkpoint_filter_fn")


def write_chans_fixture(out_dir, name, like, size, overrides, in_chans, seed=0):
    cfg, state, path, gen = write_seeded_checkpoint(out_dir, name, like, size, overrides, seed)
    for c in in_chans:
        model = maxxvit.MaxxVit(cfg, img_size=size, in_chans=c, num_classes=10).eval()
        adapted = maxxvit.checkpoint_filter_fn(dict(state), model)
        adapted["stem.conv1.weight"] = adapt_input_conv(c, adapted["stem.conv1.weight"])
        model.load_state_dict(adapted)
        x = torch.randn(2, c, *size, generator=gen)
        logits, feats = write_io(path, f"io_c{c}.npz", model, x)
        print(f"{name} with in_chans={c}: logits {logits.shape}, stages {[f.shape[1:3] for f in feats]}")
    write_config(path, name, like, size, cfg, in_chans=list(in_chans),
                 input_note="images_nhwc are already normalized; feed them with preprocessing off; the checkpoint "
                            "is 3-channel, io_c{C}.npz are timm's outputs from a model built with in_chans=C and "
                            "loaded from it with checkpoint_filter_fn, then timm's adapt_input_conv(C, w) on "
                            "stem.conv1.weight, as timm's pretrained loading does")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", nargs="?", default="tests/fixtures/timm_extra")
    p.add_argument("--full", action="store_true", help="write full-size fixtures (large) instead")
    p.add_argument("--sizes", metavar="DIR", help="write the run-time size fixtures (SIZES) to DIR instead")
    p.add_argument("--chans", metavar="DIR", help="write the input-channel fixtures (CHANS) to DIR instead")
    args = p.parse_args()
    if args.chans:
        for name, (like, size, overrides, in_chans) in CHANS.items():
            write_chans_fixture(args.chans, name, like, size, overrides, in_chans)
        return
    if args.sizes:
        for name, (like, size, overrides, run_sizes) in SIZES.items():
            write_sizes_fixture(args.sizes, name, like, size, overrides, run_sizes)
        return
    for name, (like, size, overrides, load_size) in (FULL_SIZE if args.full else FIXTURES).items():
        write_fixture(args.out_dir, name, like, size, overrides, load_size, shrink=not args.full)


if __name__ == "__main__":
    main()
