"""Fine-tune a CoAtNet on a folder of images (DATA/CLASS/*.png|jpg), optionally from pretrained weights.

    python -m examples.finetune_folder --data my_photos --weights coatnet_micro.weights.h5 --freeze-backbone
    python -m examples.finetune_folder --make-shapes /tmp/shapes --fast        # no data? a synthetic folder

--weights takes a Keras .weights.h5 (saved from the same model and input size, with or without its head),
a timm .safetensors, or a .keras model (e.g. runs/<demo>/best.keras); without it the model starts from
random weights (offline machines have no published checkpoints). Writes runs/finetune-<time>/: best.keras,
labels.txt, curves.png, metrics.json and, with --export-int8, a validated int8 .tflite with uint8 input.
"""

import argparse
import os
import sys

from examples.cli import Steps, run_main
from examples.rundir import new_run_dir

PROG = "python -m examples.finetune_folder"
WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".safetensors", ".keras")
# A light recipe for small folders: no MixUp/RandAugment, mild crops, no LR scaling with the batch, and no
# label smoothing (confident scores keep int8's top-1 equal to Keras's on the few validation images).
RECIPE = {"dataset": "folder", "randaugment_ops": 0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "label_smoothing": 0.0,
          "rrc_scale": [0.6, 1.0], "drop_path_rate": 0.0, "warmup_epochs": 1, "lr_scaling": "none",
          "val_fraction": 0.2, "backup": False}
FAST = {"epochs": 5}
SHAPES_PER_CLASS = 40  # --make-shapes: 120 images, so int8 is validated on 60 held-out images, not a handful


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="image folder: DATA/CLASS/*.png (at least 2 classes)")
    data.add_argument("--make-shapes", metavar="DIR",
                      help="write a synthetic 3-class folder (circle, square, triangle) to DIR and train on it")
    p.add_argument("--weights", default=None, help=f"pretrained weights file ({', '.join(WEIGHT_SUFFIXES)}); "
                                                   "default: none (random initialization)")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the classifier head")
    p.add_argument("--model", default="coatnet_micro", help="keras_coatnet model name (default coatnet_micro)")
    p.add_argument("--image-size", type=int, default=64, help="input size, a multiple of 32 (default 64)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10; --fast: 5)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--export-int8", action="store_true",
                   help="also export an int8 .tflite for CPUs (XNNPACK; uint8 input) validated against the Keras model")
    p.add_argument("--int8-min-agreement", type=float, default=None, metavar="F",
                   help="top-1 agreement with Keras the int8 file must reach on the folder's images (default: "
                        "export's 0.98; with 30 images one differing image is already 0.967)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of training and of the int8 calibration / held-out sampling (default 0)")
    p.add_argument("--runs-dir", default="runs", help="parent of the run folder (default runs)")
    p.add_argument("--fast", action="store_true", help="a quick run: 5 epochs")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return p


def check_args(args):
    """Fails early (before TensorFlow starts) on arguments that cannot work."""
    if args.data is not None and not os.path.isdir(args.data):
        raise FileNotFoundError(f"--data {args.data}: no such folder (expected DATA/CLASS/*.png)")
    if args.weights is not None:
        if not args.weights.endswith(WEIGHT_SUFFIXES):
            raise ValueError(f"--weights {args.weights}: unsupported file type; allowed: {', '.join(WEIGHT_SUFFIXES)}")
        if not os.path.isfile(args.weights):
            raise FileNotFoundError(f"--weights {args.weights}: file not found")
    if args.image_size < 32 or args.image_size % 32:
        raise ValueError(f"--image-size {args.image_size} must be a multiple of 32")
    if args.int8_min_agreement is not None and not 0.0 < args.int8_min_agreement <= 1.0:
        raise ValueError(f"--int8-min-agreement {args.int8_min_agreement} must be in (0, 1]")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")


def training_config(args, data_dir, run_dir):
    cfg = {**RECIPE, "model": args.model, "train_data": data_dir, "image_size": args.image_size,
           "weights": args.weights, "freeze_backbone": bool(args.freeze_backbone), "epochs": args.epochs,
           "batch_size": args.batch_size, "lr": args.lr, "output_dir": run_dir, "seed": args.seed,
           "verbose": 1 if sys.stdout.isatty() else 2}
    if args.fast:
        cfg.update(FAST)
    return cfg


def run(args):
    """Fine-tunes (and optionally exports); returns {'run_dir', 'classes', 'val_accuracy', 'model', ...}."""
    check_args(args)
    steps = Steps(3 if args.export_int8 else 2)
    data_dir = args.data
    if args.make_shapes:
        from examples.shapes import write_shapes_folder

        write_shapes_folder(args.make_shapes, per_class=SHAPES_PER_CLASS, seed=args.seed)
        data_dir = args.make_shapes
    run_dir = new_run_dir(args.runs_dir, prefix="finetune-")
    print(f"fine-tuning {args.model} on {data_dir} -> {run_dir}", flush=True)

    steps.start("reading the folder")
    from training.data import list_image_folder

    paths, labels, classes = list_image_folder(data_dir)
    steps.log(f"{len(paths)} images, {len(classes)} classes: {', '.join(classes)}")
    labels_path = os.path.join(run_dir, "labels.txt")
    from keras_coatnet.atomic import write_text

    write_text(labels_path, "\n".join(classes) + "\n")

    cfg = training_config(args, data_dir, run_dir)
    start = f"from {args.weights}" if args.weights else "from random weights (no --weights)"
    steps.start(f"training {cfg['epochs']} epochs {start}" + (", backbone frozen" if args.freeze_backbone else ""))
    from training.train import run as train

    trained = train(cfg)
    out = {"run_dir": run_dir, "classes": classes, "labels": labels_path, "model": trained["best_model"],
           "val_accuracy": trained.get("final_val_accuracy"), "metrics": trained["metrics_json"]}
    steps.log(f"validation accuracy {out['val_accuracy']:.1%}; model {out['model']}")

    if args.export_int8:
        steps.start("exporting int8 TFLite for CPUs (uint8 input), validating against Keras")
        from export import export_model

        report = export_model(out["model"], run_dir, formats=["int8"], calibration_source=data_dir,
                              uint8_input=True, labels=classes, progress=steps.log, seed=args.seed,
                              thresholds=None if args.int8_min_agreement is None else {"int8": args.int8_min_agreement})
        out["int8_tflite"] = report["formats"]["int8"]["path"]
        out["int8_agreement"] = report["formats"]["int8"]["top1_agreement"]
        steps.log(f"try it: python -m examples.tflite_predict {out['int8_tflite']} IMAGE.png")
    print(f"\nDone in {steps.elapsed():.0f} s. Model: {out['model']}  labels: {labels_path}", flush=True)
    return out


def main(argv=None):
    return run_main(PROG, build_parser(), lambda args: run(args) and 0, argv)


if __name__ == "__main__":
    sys.exit(main())
