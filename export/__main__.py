"""CLI: ``python -m export MODEL.keras OUT_DIR [--formats ...] [--calibration digits|DIR|TFRECORD|CONFIG]``.

Exits 0 when every requested format exported and validated, 1 when a format failed validation,
2 on a bad request or environment (missing / corrupt model, unknown format, bad size, too few calibration
images, an output folder that is a file or not writable: checked before converting), 130 on Ctrl-C.

OUT_DIR may hold an earlier export: the files it listed in its report.json ("files", the manifest) and this
model's format files that this export does not write are removed, so no other model's file stays beside the
new labels.txt and report.json. Other files in OUT_DIR are left alone.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    from export.formats import FORMATS

    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    p.add_argument("model", help="trained model saved with model.save('m.keras')")
    p.add_argument("out_dir", help="folder for the exported files, labels.txt and report.json (the manifest); an "
                                   "earlier export's files there that this one does not write are removed")
    p.add_argument("--formats", default="all",
                   help=f"comma-separated, from {', '.join(FORMATS)} ('all' = every one but qat_int8); int8: "
                        "for CPUs (XNNPACK), int8_full: integer only, for NPU / DSP / Edge TPU")
    p.add_argument("--calibration", default=None,
                   help="calibration / validation images: digits, an image folder, a TFRecord or a training "
                        "config (.yaml/.json); required for int8, int8_full, int16x8, qat_int8")
    p.add_argument("--num-calibration", type=int, default=64,
                   help="calibration images, sampled across classes (default 64, at least 8)")
    p.add_argument("--num-heldout", type=int, default=64,
                   help="held-out validation images, disjoint from calibration (default 64, at least 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration / held-out sampling (default 0)")
    p.add_argument("--input-mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="for a model without a Normalize layer (include_preprocessing=False): the mean its "
                        "input was normalized with, 0-1 scale (timm CoAtNet 0.5 0.5 0.5; ImageNet 0.485 0.456 0.406)")
    p.add_argument("--input-std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="with --input-mean: the std (timm CoAtNet 0.5 0.5 0.5; ImageNet 0.229 0.224 0.225)")
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="N",
                   help="H [W]: multiples of 32; the model's size, or any for a model built with input_shape=(None, None, 3) "
                        "(default: the model's)")
    p.add_argument("--uint8-input", action="store_true",
                   help="models take raw RGB camera bytes (uint8); normalization is baked in")
    p.add_argument("--io-type", default="int8", choices=("int8", "uint8", "float32"),
                   help="input/output type of int8 / int8_full / qat_int8 models (default int8)")
    p.add_argument("--labels", default=None, help="text file with one class name per line")
    p.add_argument("--name", default=None, help="file name prefix (default: the model's name)")
    p.add_argument("--no-optimize", action="store_true", help="convert the plain Keras graph, not the export view")
    p.add_argument("--gelu", default="exact", choices=("exact", "tanh", "sigmoid"),
                   help="GELU in the export view: exact, or the tanh / x*sigmoid(1.702x) approximations "
                        "(sigmoid: faster int8, changes outputs slightly)")
    p.add_argument("--attention", default="auto", choices=("auto", "batched", "per_head"),
                   help="attention matmuls: one batched matmul (fastest in float) or per-head 2-D matmuls "
                        "(fastest in int8); auto picks per format")
    p.add_argument("--rel-bias", default="auto", choices=("auto", "table", "constant"),
                   help="relative-position bias: expanded at run time from the small table (smaller file) or "
                        "stored expanded (fastest); auto: constant for fp32, table for the others")
    p.add_argument("--qat-epochs", type=int, default=2, help="fine-tuning epochs of qat_int8")
    p.add_argument("--threshold", action="append", default=[], metavar="FORMAT=VALUE",
                   help="override a validation threshold, e.g. int8=0.95 (agreement) or fp16=0.02 (rel error)")
    p.add_argument("--no-strict", action="store_true", help="write formats that fail validation and exit 0")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    return p.parse_args(argv)


def _thresholds(items):
    from export.errors import ExportError

    out = {}
    for item in items:
        fmt, sep, value = item.partition("=")
        try:
            out[fmt] = float(value)
        except ValueError:
            raise ExportError(f"bad --threshold {item!r}; expected FORMAT=NUMBER") from None
        if not sep:
            raise ExportError(f"bad --threshold {item!r}; expected FORMAT=NUMBER")
    return out


def main(argv=None):
    from keras_coatnet.cli import run_main

    return run_main("export", parse_args, _export, argv)


def _export(args):
    from export.api import export_model

    size = None if args.input_size is None else (args.input_size * 2)[:2]
    report = export_model(
        args.model, args.out_dir, formats=args.formats, calibration_source=args.calibration,
        input_size=size, uint8_input=args.uint8_input, io_type=args.io_type,
        num_calib=args.num_calibration, num_heldout=args.num_heldout, optimize=not args.no_optimize,
        gelu=args.gelu, attention=args.attention, rel_bias=args.rel_bias, labels=args.labels,
        strict=not args.no_strict,
        thresholds=_thresholds(args.threshold), name=args.name, qat_epochs=args.qat_epochs,
        progress=None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True)),
        input_mean=args.input_mean, input_std=args.input_std, seed=args.seed)
    for fmt, entry in report["formats"].items():
        print(f"{fmt}\t{entry.get('path', '-')}\t{entry['size_bytes'] / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
