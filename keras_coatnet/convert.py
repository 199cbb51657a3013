"""Converts a timm CoAtNet `.safetensors` checkpoint to Keras weights (`.weights.h5`) or a Keras model (`.keras`).

    python -m keras_coatnet.convert coatnet_0_rw_224 model.safetensors coatnet_0_rw_224.weights.h5
    python -m keras_coatnet.convert config.json model.safetensors out.keras --input-size 288 --classes 10
    python -m keras_coatnet.convert hf://timm/coatnet_rmlp_1_rw_224.sw_in1k coatnet_rmlp_1.keras

SOURCE (hf://owner/repo[@revision], or a folder with timm's config.json and model.safetensors) stands for MODEL
and CHECKPOINT: the architecture and head come from its config.json, the files through the Hugging Face cache.

MODEL is a registered name (`keras_coatnet.list_models()`) or a JSON file holding a timm `MaxxVitCfg` dict
(or a dict with `timm_cfg`, `img_size` and `num_classes`, like the test fixtures). Every tensor mapped is
reported as `timm key -> keras variable path  timm shape -> keras shape`. The output appears whole or not at
all (written to a temporary name in its folder, then renamed): a full disk keeps an earlier file of that name.
Exit status 0 on success, 2 on bad input or environment (one line on stderr; --debug shows the traceback).
"""

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import zipfile

OUTPUT_SUFFIXES = (".weights.h5", ".keras")


def _size(text):
    """'384' or '384x288' (H x W) -> (H, W)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) not in (1, 2) or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected H or HxW in pixels, e.g. 384 or 384x288; got {text!r}")
    return dims * 2 if len(dims) == 1 else dims


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="keras-coatnet-convert", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", metavar="MODEL CHECKPOINT | SOURCE",
                   help="a registered model name (or a JSON file with a timm MaxxVitCfg) and a timm .safetensors "
                        "state_dict; or one SOURCE: hf://owner/repo[@revision] or a timm checkpoint folder")
    p.add_argument("output", help="output path ending in .weights.h5 (weights) or .keras (whole model)")
    p.add_argument("--input-size", type=_size, help="H or HxW (default: the model's native size); "
                   "relative position tables are resized for another size")
    p.add_argument("--classes", type=int, help="classifier size (default: the checkpoint's); another size keeps "
                   "the backbone and initializes a new classifier")
    p.add_argument("--no-top", action="store_true", help="leave out the classifier")
    p.add_argument("--quiet", action="store_true", help="do not list every tensor")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    from keras_coatnet import hub

    if len(args.inputs) == 1 and hub.is_source(args.inputs[0]):
        args.model, args.checkpoint = None, args.inputs[0]
    elif len(args.inputs) == 2:
        args.model, args.checkpoint = args.inputs
    else:
        p.error("expected MODEL CHECKPOINT OUTPUT, or SOURCE OUTPUT with SOURCE hf://owner/repo or a timm folder "
                f"(config.json inside); got {len(args.inputs) + 1} arguments")
    return args


def _model_spec(model):
    """(timm config dict or None, registry name or None, default (H, W), default classes) for MODEL."""
    from keras_coatnet.variants import get_entry

    if not model.endswith(".json"):
        return None, model, get_entry(model)["input_size"], None
    if not os.path.isfile(model):
        raise FileNotFoundError(f"Model config not found: {model}")
    with open(model, encoding="utf-8") as f:
        cfg = json.load(f)
    if "timm_cfg" in cfg:
        return cfg["timm_cfg"], None, tuple(cfg.get("img_size", (224, 224))), cfg.get("num_classes")
    return cfg, None, (224, 224), None


def build(args):
    """The Keras model that `args` describe, with the checkpoint loaded. Returns (model, loaded timm keys)."""
    import keras_coatnet as kc
    from keras_coatnet import hub
    from keras_coatnet.timm_weights import read_safetensors, variable_map

    if not args.output.endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"Output must end in {' or '.join(OUTPUT_SUFFIXES)}; got {args.output!r}.")
    if args.model is None:
        ckpt = hub.checkpoint(args.checkpoint)
        args.checkpoint = ckpt.weights_path
        kw = dict(include_top=not args.no_top, classes=args.classes, weights=ckpt)
        if args.input_size:
            kw["input_shape"] = (*args.input_size, 3)
        model = kc.create_model(ckpt.architecture, **kw)
        new_head = args.no_top or (args.classes or ckpt.num_classes) != ckpt.num_classes
        return model, sorted(k for k in variable_map(model) if not (new_head and k.startswith("head.fc.")))
    if not args.checkpoint.endswith(".safetensors"):
        raise ValueError(f"Expected a timm .safetensors checkpoint; got {args.checkpoint!r}.")
    cfg, name, native, cfg_classes = _model_spec(args.model)
    fc = read_safetensors(args.checkpoint).get("head.fc.weight")
    classes = args.classes or (fc.shape[0] if fc is not None else cfg_classes or 1000)
    size = args.input_size or native
    kw = dict(include_top=not args.no_top, classes=classes, input_shape=(*size, 3))
    model = kc.create_model(name, **kw) if name else kc.from_timm_config(cfg, **kw)
    keys = kc.load_weights(model, args.checkpoint, include_top=not args.no_top, classes=classes)
    return model, keys


def report(model, state_shapes, keys, out=None):
    """Prints one line per loaded tensor: timm key -> Keras variable path, timm shape -> Keras shape."""
    from keras_coatnet.timm_weights import variable_map

    targets = variable_map(model)
    for key in keys:
        variable = targets[key][0]
        print(f"{key} -> {variable.path}  {list(state_shapes[key])} -> {list(variable.shape)}", file=out or sys.stdout)


def save(model, output):
    """Saves ``model`` to ``output`` (.keras or .weights.h5) atomically.

    The .weights.h5 is the weights file of a .keras archive (the same HDF5 layout ``save_weights`` writes), built
    in memory: HDF5 writing straight to a file crashes the process when the disk fills up (exit 139)."""
    from keras_coatnet.atomic import atomic_path, write_bytes

    if output.endswith(".keras"):
        with atomic_path(output) as tmp:
            model.save(str(tmp))
        return
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".convert.", suffix=".tmp", dir=folder) as tmp:
        archive_path = os.path.join(tmp, "weights.keras")
        model.save(archive_path)
        with zipfile.ZipFile(archive_path) as archive:
            data = archive.read("model.weights.h5")
    write_bytes(output, data)


def convert(args):
    from keras_coatnet.pretrained import read_header

    model, keys = build(args)
    if not args.quiet:
        report(model, read_header(args.checkpoint), keys)
    save(model, args.output)
    params = sum(math.prod(v.shape) for v in model.weights)
    print(f"Converted {len(keys)} tensors ({params:,} values) from {args.checkpoint} to {args.output} "
          f"({model.name}, input {tuple(model.input_shape[1:])}).")


def main(argv=None):
    from keras_coatnet.cli import run_main

    logging.basicConfig(format="%(message)s")
    logging.getLogger("keras_coatnet").setLevel(logging.INFO)
    return run_main("convert", parse_args, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
