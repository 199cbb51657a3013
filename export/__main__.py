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
    """The CLI's arguments: the model, the output folder, then every option of ``export.request.ExportRequest``."""
    from export.request import cli_options

    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="trained model saved with model.save('m.keras')")
    p.add_argument("out_dir", help="folder for the exported files, labels.txt and report.json (the manifest); an "
                                   "earlier export's files there that this one does not write are removed")
    for flag, dest, default, help, kwargs in cli_options():
        p.add_argument(flag, dest=dest, default=None if kwargs.get("action") == "append" else default, help=help,
                       **kwargs)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    return p.parse_args(argv)


def main(argv=None):
    from keras_coatnet.cli import run_main

    return run_main("export", parse_args, _export, argv)


def _export(args):
    from export.api import export_model
    from export.request import cli_options

    options = {dest: getattr(args, dest) for _, dest, *_ in cli_options()}
    progress = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    report = export_model(args.model, args.out_dir, progress=progress, **options)
    for fmt, entry in report["formats"].items():
        print(f"{fmt}\t{entry.get('path', '-')}\t{entry['size_bytes'] / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
