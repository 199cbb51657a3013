"""``export_model``: a trained CoAtNet -> validated SavedModel / TFLite files + labels.txt + report.json."""

import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from export import analyze, calibration, litert, loading, machine, metadata, validate, view
from export.convention import describe, input_convention, to_model_input
from keras_coatnet.atomic import exit_on_sigterm, remove, replace, writable_folder, write_bytes, write_text
from export.errors import ExportError
from export.formats import FORMATS, configure, convert, parse_formats
from export.labels import class_labels
from export.serving import Serving

REPORT = "report.json"
LABELS = "labels.txt"

FLOAT_VIEW_TOLERANCE = 1e-4


def _log(progress, msg):
    if progress:
        progress(msg)


def _model_inputs(model, images, convention=None):
    """Raw 0-255 images -> what the Keras model takes (``export.convention``: normalized unless it does it)."""
    return to_model_input(images, convention or input_convention(model))


def _keras_outputs(fn, x):
    """Runs a float forward function image by image (batch 1, as exported) -> [N, ...]."""
    import tensorflow as tf

    f = tf.function(fn, input_signature=[tf.TensorSpec((1, *x.shape[1:]), tf.float32)])
    return np.concatenate([f(tf.constant(xi[None])).numpy() for xi in x])


def _saved_model_outputs(path, images):
    import tensorflow as tf

    sig = tf.saved_model.load(str(path)).signatures["serving_default"]
    ys = [list(sig(image=tf.constant(im[None])).values())[0].numpy() for im in images]
    return np.concatenate(ys)


def check_view(model, forward, images, tolerance=FLOAT_VIEW_TOLERANCE):
    """Max relative difference of the export view vs the Keras model on ``images``; raises if above tolerance."""
    ref = _keras_outputs(view.keras_forward(model), images)
    got = _keras_outputs(forward, images)
    err = float(np.abs(ref - got).max() / max(np.abs(ref).max(), 1e-12))
    if err > tolerance:
        raise ExportError(f"export view disagrees with the Keras model (max rel error {err:.3g} > {tolerance:g}); "
                          "export with optimize=False (--no-optimize) and report this")
    return err


def export_model(model_or_path, out_dir, formats=None, calibration_source=None, input_size=None,
                 uint8_input=False, io_type="int8", num_calib=64, num_heldout=64, optimize=True,
                 gelu="exact", attention="auto", rel_bias="auto", labels=None, strict=True,
                 thresholds=None, name=None, qat_epochs=2, progress=print, input_mean=None, input_std=None,
                 seed=calibration.SEED):
    """Exports ``model_or_path`` to ``out_dir`` in ``formats``; returns the report dict (also report.json).

    Args:
        formats: names from ``export.formats.FORMATS`` (default: all but qat_int8).
        calibration_source: "digits", an image folder, a TFRecord or a training config (see
            ``export.calibration``); needed for int8 / int16x8 / qat_int8; also the held-out validation set.
        input_size: (H, W) or int; must match the model's built size and be a multiple of 32.
        uint8_input: the signature takes raw RGB bytes (uint8) with normalization baked in.
        io_type: input/output type of int8 / int8_full / qat_int8 ("int8", "uint8" or "float32").
        optimize, gelu, attention, rel_bias: the export view (``export.view.Options``; "auto" picks per format);
            optimize=False converts the Keras graph as it is.
        strict: raise ValidationError after writing the passing formats if any format fails validation.
        thresholds: {format: limit} overriding the per-format validation thresholds.
        input_mean, input_std: (R, G, B) on the 0-1 scale, required for (and only for) a model without a
            ``Normalize`` layer (include_preprocessing=False): the normalization its input expects.
        seed: the seed of the stratified calibration / held-out sampling.
    With an approximate ``gelu`` the view is checked with exact GELU against Keras (1e-4), and a float file is
    held to its format's bound against the approximated graph plus top-1 agreement with Keras
    (``export.validate.thresholds_for``).
    ``out_dir`` is checked (or created) before anything is converted. Nothing is written for a format that fails
    to convert or validate; files appear atomically when every format is done, each ``.tflite`` carrying
    ``export.metadata`` (input convention, labels); report.json lists every file written ("files", the
    manifest); files of an earlier export in ``out_dir`` (its manifest, or this model's format names) that
    this export did not write are removed. Temporary folders are removed on errors, Ctrl-C and SIGTERM.
    """
    formats = parse_formats(formats)
    try:
        out_dir = writable_folder(out_dir)
    except OSError as e:
        raise ExportError(str(e)) from None
    model = loading.load_model(model_or_path)
    loading.check_coatnet(model)
    size = loading.input_size(model, input_size)
    convention = input_convention(model, input_mean, input_std)
    name = name or model.name
    needs_calib = any(FORMATS[f].calibrated for f in formats)
    if needs_calib and calibration_source is None:
        raise ExportError(f"formats {[f for f in formats if FORMATS[f].calibrated]} need --calibration "
                          "(digits, an image folder, a TFRecord or a training config)")
    calibration.check_counts(num_calib, num_heldout, calibrated=needs_calib)
    names = class_labels(_num_outputs(model), labels, calibration_source)
    with exit_on_sigterm(), tempfile.TemporaryDirectory(prefix="coatnet_export_") as tmp, \
            tempfile.TemporaryDirectory(prefix=".coatnet_export_", dir=out_dir) as staging:
        report, failures = _export(model, Path(tmp), Path(staging), out_dir, formats, calibration_source, size,
                                   uint8_input, io_type, num_calib, num_heldout, optimize, gelu, attention,
                                   rel_bias, names, strict, thresholds, name, qat_epochs, progress, convention,
                                   needs_calib, seed)
        _publish(Path(staging), out_dir, report, names, name)
    if failures and strict:
        raise failures[0] if len(failures) == 1 else type(failures[0])(
            "; ".join(str(f) for f in failures))
    return report


def _num_outputs(model):
    return int(model.outputs[0].shape[-1])


def _export(model, tmp, staging, out_dir, formats, calibration_source, size, uint8_input, io_type, num_calib,
            num_heldout, optimize, gelu, attention, rel_bias, names, strict, thresholds, name, qat_epochs,
            progress, convention, needs_calib, seed):
    """Converts and validates every format into ``staging``; returns (report, validation failures)."""
    _log(progress, f"[export] {name}: {size[0]}x{size[1]}, formats {formats}")
    if calibration_source is not None:
        samples = calibration.load_samples(calibration_source, size, num_calib, num_heldout, seed=seed,
                                           min_calib=calibration.MIN_CALIBRATION if needs_calib else 0)
    else:
        samples = calibration.random_samples(size, num_calib=1, num_heldout=8)
    calib_raw = np.round(samples.calib)
    held_raw = np.round(samples.heldout)
    held_model = _model_inputs(model, held_raw, convention)
    calib_in = calib_raw if uint8_input else _model_inputs(model, calib_raw, convention)
    held_in = held_raw if uint8_input else held_model

    base_opts = view.Options(gelu=gelu, attention=attention, rel_bias=rel_bias)
    approx_gelu = optimize and gelu != "exact"  # a different function on purpose
    ref = _keras_outputs(view.keras_forward(model), held_model)
    input_info = {**describe(convention, uint8_input), "size": list(size)}
    per_class = samples.per_class()
    report = {"model": name, "input_size": list(size), "uint8_input": bool(uint8_input),
              "input_dtype": "uint8" if uint8_input else "float32", "input": input_info,
              "calibration": samples.source, "num_calibration": int(len(calib_raw)),
              "num_heldout": int(len(held_raw)), "calibration_per_class": per_class["calibration"],
              "heldout_per_class": per_class["heldout"], "seed": int(seed), "optimize": bool(optimize),
              "gelu": gelu, "attention": attention, "rel_bias": rel_bias, "machine": machine.describe(),
              "formats": {}}
    failures = []
    views = {}  # resolved view options -> (options, Serving, SavedModel dir): one graph per distinct choice

    def view_for(fmt):
        opts = base_opts.resolve(fmt)
        key = tuple(opts.as_dict().values()) if optimize else "keras"
        if key not in views:
            forward = view.forward(model, opts) if optimize else view.keras_forward(model)
            if optimize:  # the graph rewrite checked exactly: with exact GELU, whatever GELU it exports
                exact = view.forward(model, view.Options("exact", opts.attention, opts.rel_bias))
                err = check_view(model, exact, held_model[:4])
                report["view_max_rel_error"] = max(err, report.get("view_max_rel_error", 0.0))
                _log(progress, f"[export] export view {opts.as_dict()} matches Keras (max rel error {err:.2e})")
            serving = Serving(model, forward, size, uint8_input, convention)
            graph_ref = _keras_outputs(forward, held_model) if approx_gelu else None
            views[key] = (opts, serving, serving.write_saved_model(tmp / f"saved_model_{len(views)}"), graph_ref)
        return views[key]

    for fmt in formats:
        t0 = time.time()
        _log(progress, f"[export] {fmt}: converting")
        if fmt == "saved_model":  # the Keras graph itself (model.export), same signature
            keras_serving = Serving(model, view.keras_forward(model), size, uint8_input, convention)
            keras_sm = keras_serving.write_saved_model(tmp / "keras_saved_model")
            got = _saved_model_outputs(keras_sm, held_in)
            size_bytes, data, extra = _tree_size(keras_sm), None, {}
        else:
            opts, serving, sm_dir, graph_ref = view_for(fmt)
            data = _convert(serving, sm_dir, fmt, model, calib_in, calib_raw, samples, io_type, uint8_input,
                            qat_epochs, progress, opts, optimize)
            fmt_ref = ref
            if fmt == "qat_int8":  # compared with the fine-tuned (fake-quant) Keras model it came from
                data, qat_model = data
                fmt_ref = _keras_outputs(view.keras_forward(qat_model), held_model)
            data = metadata.add(data, {"model": name, "format": fmt, "input": input_info, "labels": names,
                                       "output": serving.output_name})
            it = litert.load(data)
            got = litert.predict(it, held_in)
            size_bytes = len(data)
            extra = {"io_types": litert.io_types(it), **analyze.summarize(data)}
            if optimize:
                extra["view"] = opts.as_dict()
            if extra["flex_ops"]:
                raise ExportError(f"{fmt}: Flex / custom ops {extra['flex_ops']} in the converted model")
        metrics = validate.compare(ref if fmt in ("saved_model",) else fmt_ref, got, samples.heldout_labels)
        fmt_approx = approx_gelu and fmt != "saved_model" and FORMATS[fmt].float_error is not None
        if fmt_approx:  # the file against the approximated graph it was converted from
            metrics["graph_max_rel_error"] = validate.compare(graph_ref, got)["max_rel_error"]
        passed = validate.check(fmt, metrics, thresholds, approx_gelu=fmt_approx)
        entry = {"format": fmt, "size_bytes": int(size_bytes), "seconds": round(time.time() - t0, 2),
                 **metrics, **extra}
        if passed or not strict:
            file_name = f"{name}{FORMATS[fmt].suffix}"
            if fmt == "saved_model":
                keras_serving.write_saved_model(staging / file_name)
            else:
                write_bytes(staging / file_name, data)
            entry["path"] = str(out_dir / file_name)
        else:
            failures.append(validate.failure(fmt, metrics))
        report["formats"][fmt] = entry
        _log(progress, f"[export] {fmt}: {size_bytes / 1e6:.2f} MB, " + _summary(metrics))
    return report, failures


def _digest(path):
    """(bytes, sha256 hex) of a file, or of a folder's files in sorted order."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h, total = hashlib.sha256(), 0
    for f in files:
        data = f.read_bytes()
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0" + data)
        total += len(data)
    return total, h.hexdigest()


def _previous_files(out_dir, name):
    """Files an earlier export left in ``out_dir``: its manifest (report.json "files") and this model's formats."""
    found = {f"{name}{fmt.suffix}" for fmt in FORMATS.values()}
    try:
        old = json.loads((out_dir / REPORT).read_text())
        found |= {f for f in old.get("files", {}) if isinstance(f, str) and Path(f).name == f}
    except (OSError, ValueError, AttributeError):
        pass
    return found


def _publish(staging, out_dir, report, names, name):
    """Moves the staged files into ``out_dir``, removes an earlier export's files not written now, then writes
    labels.txt and report.json (the manifest, last)."""
    write_text(staging / LABELS, "\n".join(names) + "\n")
    written = sorted(p.name for p in staging.iterdir())
    report["files"] = {f: dict(zip(("bytes", "sha256"), _digest(staging / f))) for f in written}
    report["files"][REPORT] = {"bytes": None, "sha256": None}  # this file
    for f in written:
        replace(staging / f, out_dir / f)
    stale = sorted(f for f in _previous_files(out_dir, name) - set(report["files"]) if remove(out_dir / f))
    report["labels"] = str(out_dir / LABELS)
    report["removed_stale_files"] = stale
    write_text(out_dir / REPORT, json.dumps(report, indent=2))


def _summary(m):
    s = f"max rel err {m['max_rel_error']:.2e}, top-1 agreement {m['top1_agreement']:.1%}"
    if "accuracy" in m:
        s += f", accuracy {m['accuracy']:.1%} (Keras {m['keras_accuracy']:.1%})"
    return s + ("" if m["passed"] else "  FAILED")


def _tree_size(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _convert(serving, sm_dir, fmt, model, calib_in, calib_raw, samples, io_type, uint8_input, qat_epochs,
             progress, opts, optimize):
    """TFLite bytes for one format."""
    dtype = "uint8" if uint8_input else "float32"
    rep = calibration.representative(calib_in, dtype)
    if fmt == "qat_int8":
        from export import qat

        return qat.export_qat(model, serving, samples, calib_raw, io_type, uint8_input, qat_epochs, progress,
                              opts, optimize)
    conv = configure(serving.converter(sm_dir), fmt, rep if FORMATS[fmt].calibrated else None, io_type,
                     float_input=not uint8_input)
    try:
        return convert(conv, fmt)
    except Exception as e:  # noqa: BLE001 - converter errors are long MLIR dumps
        lines = [l for l in str(e).splitlines() if l.strip()]
        raise ExportError(f"{fmt}: TFLite conversion failed: {lines[-1] if lines else type(e).__name__}") from e
