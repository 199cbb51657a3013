"""Size / latency / agreement of every export format, plus the peer's fp32 TFLite, in one table.

``python -m export.benchmark MODEL [--out DIR]``: MODEL is a ``.keras`` file or a keras_coatnet model name
(built with random weights at ``--input-size``, e.g. ``coatnet_0``). Prints one row per format: file size,
LiteRT latency at 1 and 2 threads (median of interleaved runs after warm-up, one process), the ratio to our fp32
at 2 threads, and agreement / accuracy with the Keras model; writes ``benchmark.json`` and ``benchmark.png``.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PEER_NAME = "peer_kecam_fp32"
PEER_CODE = """
import tensorflow as tf
from keras_cv_attention_models import coatnet
m = coatnet.CoAtNet0(pretrained=None, input_shape=({h}, {w}, 3), num_classes={classes})
conv = tf.lite.TFLiteConverter.from_keras_model(m)
data = conv.convert()
open({path!r}, "wb").write(data)
emit({{"bytes": len(data), "params": int(m.count_params())}})
"""


def peer_fp32(out_dir, size, classes, progress=print):
    """Converts keras-cv-attention-models' CoAtNet0 (random weights) to fp32 TFLite in the peer venv.

    Returns the .tflite path, or None (with a message) if the peer environment is unavailable."""
    path = Path(out_dir) / f"{PEER_NAME}.tflite"
    run_peer = _repo_peer_runner()
    if run_peer is None:
        progress("[bench] benchmarks/peer.py not found (it is in the repository, not installed): no peer comparison")
        return None
    try:
        run_peer(PEER_CODE.format(h=size[0], w=size[1], classes=classes, path=str(path.resolve())), timeout=1200)
    except Exception as e:  # noqa: BLE001 - the peer is optional; say why and go on
        progress(f"[bench] peer conversion failed, no peer comparison: {str(e).splitlines()[0]}")
        return None
    return path


def _repo_peer_runner():
    """`run_peer` from the repository's benchmarks/peer.py next to this package, or None where the package is
    installed without the repository (benchmarks/ is not installed; no import by that name)."""
    import importlib.util

    repo = Path(__file__).resolve().parents[1]
    path = repo / "benchmarks" / "peer.py"
    if not (path.is_file() and (repo / "pyproject.toml").is_file()):
        return None
    spec = importlib.util.spec_from_file_location("keras_coatnet_repo_peer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_peer


def _model(spec, input_size, classes):
    if Path(spec).suffix == ".keras" or Path(spec).exists():
        return spec
    import keras_coatnet

    return keras_coatnet.create_model(spec, input_shape=(*input_size, 3), classes=classes)


def run(model, out_dir, formats=None, calibration_source="random", input_size=(224, 224), classes=1000,
        threads=(1, 2), runs=10, warmup=2, peer=True, chart=True, progress=print, **export_kw):
    """Exports ``model`` (path, model or name) in ``formats`` and times every file; returns the report dict."""
    from export.api import export_model
    from export.runtime import measure
    from keras_coatnet.atomic import write_text

    out_dir = Path(out_dir)
    model = _model(model, tuple(input_size), classes) if isinstance(model, str) else model
    report = export_model(model, out_dir, formats=formats, calibration_source=calibration_source,
                          strict=False, progress=progress, **export_kw)
    files = {f: e["path"] for f, e in report["formats"].items() if e.get("path", "").endswith(".tflite")}
    if peer:
        p = peer_fp32(out_dir, report["input_size"], _num_classes(model), progress)
        if p is not None:
            files[PEER_NAME] = str(p)
            report["formats"][PEER_NAME] = {"format": PEER_NAME, "size_bytes": p.stat().st_size, "path": str(p)}
    progress(f"[bench] timing {len(files)} models, threads {list(threads)}, {runs} interleaved runs")
    lat = measure(files, threads=threads, runs=runs, warmup=warmup, progress=None)
    base = lat.get("fp32", {})
    for name, t in lat.items():
        entry = report["formats"][name]
        entry["latency_ms"] = {str(n): round(v, 3) for n, v in t.items()}
        entry["ratio_to_fp32"] = {str(n): round(v / base[n], 3) for n, v in t.items() if n in base}
    report["threads"] = list(threads)
    report["runs"] = runs
    write_text(out_dir / "benchmark.json", json.dumps(report, indent=2))
    if chart:
        report["chart"] = str(plot(report, out_dir / "benchmark.png"))
    return report


def _num_classes(model):
    import keras

    if isinstance(model, keras.Model):
        return int(model.outputs[0].shape[-1])
    from export.model_input import load_model

    return int(load_model(model).outputs[0].shape[-1])


def table(report):
    """The benchmark table as text (tab-separated columns): size, latency and ratio to fp32 per thread count,
    XNNPACK partitions and the ops outside XNNPACK; first line: the CPU and LiteRT it was measured with."""
    from export import runtime

    threads = report.get("threads", [1, 2])
    head = (["format", "size_MB"] + [f"ms@{n}t" for n in threads] + [f"x_fp32@{n}t" for n in threads]
            + ["agreement", "accuracy", "partitions", "not_delegated"])
    machine = runtime.machine_line(report["machine"]) if "machine" in report else runtime.machine_line()
    rows = [machine, "\t".join(head)]
    for name, e in report["formats"].items():
        lat, ratio, acc = e.get("latency_ms", {}), e.get("ratio_to_fp32", {}), e.get("accuracy")
        rows.append("\t".join([
            name, f"{e['size_bytes'] / 1e6:.2f}", *[f"{lat[str(n)]:.1f}" if str(n) in lat else "-" for n in threads],
            *[f"{ratio[str(n)]:.2f}" if str(n) in ratio else "-" for n in threads],
            f"{e['top1_agreement']:.1%}" if "top1_agreement" in e else "-",
            f"{acc:.1%}" if acc is not None else "-", str(e.get("xnnpack_partitions", "-")),
            ",".join(f"{n} {op}" for op, n in e.get("not_delegated", {}).items()) or "-"]))
    return "\n".join(rows)


def plot(report, path):
    """Bar charts of file size and 2-thread latency per format -> PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["formats"])
    n = str(report.get("threads", [2])[-1])
    sizes = [report["formats"][k]["size_bytes"] / 1e6 for k in names]
    lats = [report["formats"][k].get("latency_ms", {}).get(n, 0.0) for k in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    a.bar(names, sizes, color="#4c72b0")
    a.set_ylabel("MB")
    a.set_title("file size")
    b.bar(names, lats, color="#dd8452")
    b.set_ylabel("ms")
    b.set_title(f"LiteRT latency, {n} threads (median)")
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=35)
    fig.suptitle(f"{report['model']} {report['input_size'][0]}x{report['input_size'][1]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    from export.request import cli_options
    from keras_coatnet.cli import run_main

    p = argparse.ArgumentParser(prog="python -m export.benchmark", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help=".keras file or keras_coatnet model name (random weights), e.g. coatnet_0")
    p.add_argument("--out", default="runs/export_benchmark", help="output folder")
    p.add_argument("--classes", type=int, default=1000, help="classes for a model built by name")
    p.add_argument("--runs", type=int, default=10, help="timed runs per model and thread count")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to time")
    p.add_argument("--no-peer", action="store_true", help="skip the keras-cv-attention-models comparison")
    p.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    for flag, dest, default, help, kwargs in cli_options():  # the export options, as python -m export takes them
        if dest not in ("strict", "name", "labels"):
            p.add_argument(flag, dest=dest, default=None if kwargs.get("action") == "append" else default,
                           help=help, **kwargs)
    p.set_defaults(calibration_source="random", num_calib=16, num_heldout=16, input_size=[224])
    return run_main("export.benchmark", p.parse_args, _benchmark, argv)


def _benchmark(args):
    from export.request import cli_options

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    options = {dest: getattr(args, dest) for _, dest, *_ in cli_options() if hasattr(args, dest)}
    size = (options.pop("input_size") * 2)[:2]
    report = run(args.model, args.out, input_size=size, classes=args.classes, threads=tuple(args.threads),
                 runs=args.runs, warmup=args.warmup, peer=not args.no_peer, progress=log, **options)
    print(table(report))
    if "chart" in report:
        print(f"chart: {report['chart']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
