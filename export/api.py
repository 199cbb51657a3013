"""``export_model``: a trained CoAtNet -> validated SavedModel / TFLite files + labels.txt + report.json."""

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from export import analyze, calibration, litert, loading, validate, view
from keras_coatnet.atomic import write_bytes, write_text
from export.errors import ExportError
from export.formats import FORMATS, configure, parse_formats
from export.labels import class_labels
from export.serving import Serving, model_takes_raw_pixels

FLOAT_VIEW_TOLERANCE = 1e-4
APPROX_GELU_TOLERANCE = 2e-2  # view check (4 images) when GELU is approximated (--gelu tanh / sigmoid)
APPROX_GELU_FLOAT_THRESHOLD = 0.1  # fp32 / fp16 max rel error on all held-out images, approximated GELU


def _log(progress, msg):
    if progress:
        progress(msg)


def _model_inputs(model, images):
    """Raw 0-255 images -> what the Keras model takes (normalized unless it normalizes inside)."""
    if model_takes_raw_pixels(model):
        return images
    from keras_coatnet import normalize_input

    return normalize_input(images)


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
                 thresholds=None, name=None, qat_epochs=2, progress=print):
    """Exports ``model_or_path`` to ``out_dir`` in ``formats``; returns the report dict (also report.json).

    Args:
        formats: names from ``export.formats.FORMATS`` (default: all but qat_int8).
        calibration_source: "digits", an image folder, a TFRecord or a training config (see
            ``export.calibration``); needed for int8 / int16x8 / qat_int8; also the held-out validation set.
        input_size: (H, W) or int; must match the model's built size and be a multiple of 32.
        uint8_input: the signature takes raw RGB bytes (uint8) with normalization baked in.
        io_type: input/output type of full-integer int8 ("int8", "uint8" or "float32").
        optimize, gelu, attention, rel_bias: the export view (``export.view.Options``; "auto" picks per format);
            optimize=False converts the Keras graph as it is.
        strict: raise ValidationError after writing the passing formats if any format fails validation.
        thresholds: {format: limit} overriding the per-format validation thresholds (with an approximate
            ``gelu``, fp32 and fp16 default to APPROX_GELU_FLOAT_THRESHOLD).
    Nothing is written for a format that fails to convert or validate; files are written atomically.
    """
    formats = parse_formats(formats)
    model = loading.load_model(model_or_path)
    loading.check_coatnet(model)
    size = loading.input_size(model, input_size)
    name = name or model.name
    out_dir = Path(out_dir)
    needs_calib = any(FORMATS[f].calibrated for f in formats)
    if needs_calib and calibration_source is None:
        raise ExportError(f"formats {[f for f in formats if FORMATS[f].calibrated]} need --calibration "
                          "(digits, an image folder, a TFRecord or a training config)")
    _log(progress, f"[export] {name}: {size[0]}x{size[1]}, formats {formats}")
    if calibration_source is not None:
        samples = calibration.load_samples(calibration_source, size, num_calib, num_heldout)
    else:
        samples = calibration.random_samples(size, num_calib=1, num_heldout=8)
    calib_raw = np.round(samples.calib)
    held_raw = np.round(samples.heldout)
    held_model = _model_inputs(model, held_raw)
    calib_in = calib_raw if uint8_input else _model_inputs(model, calib_raw)
    held_in = held_raw if uint8_input else held_model

    base_opts = view.Options(gelu=gelu, attention=attention, rel_bias=rel_bias)
    view_tolerance = FLOAT_VIEW_TOLERANCE
    if optimize and gelu != "exact":  # a different function on purpose: float formats can't agree to 1e-4
        view_tolerance = APPROX_GELU_TOLERANCE
        loose = APPROX_GELU_FLOAT_THRESHOLD
        thresholds = {"fp32": loose, "fp16": loose, **(thresholds or {})}
    ref = _keras_outputs(view.keras_forward(model), held_model)
    report = {"model": name, "input_size": list(size), "uint8_input": bool(uint8_input),
              "input_dtype": "uint8" if uint8_input else "float32",
              "calibration": samples.source, "num_calibration": int(len(calib_raw)),
              "num_heldout": int(len(held_raw)), "optimize": bool(optimize), "gelu": gelu, "attention": attention,
              "rel_bias": rel_bias,
              "formats": {}}
    names = class_labels(int(ref.shape[-1]), labels, calibration_source)
    failures = []
    views = {}  # resolved view options -> (options, Serving, SavedModel dir): one graph per distinct choice

    def view_for(fmt):
        opts = base_opts.resolve(fmt)
        key = tuple(opts.as_dict().values()) if optimize else "keras"
        if key not in views:
            forward = view.forward(model, opts) if optimize else view.keras_forward(model)
            if optimize:
                err = check_view(model, forward, held_model[:4], view_tolerance)
                report["view_max_rel_error"] = max(err, report.get("view_max_rel_error", 0.0))
                _log(progress, f"[export] export view {opts.as_dict()} matches Keras (max rel error {err:.2e})")
            serving = Serving(model, forward, size, uint8_input)
            views[key] = (opts, serving, serving.write_saved_model(Path(tmp) / f"saved_model_{len(views)}"))
        return views[key]

    with tempfile.TemporaryDirectory(prefix="coatnet_export_") as tmp:
        for fmt in formats:
            t0 = time.time()
            _log(progress, f"[export] {fmt}: converting")
            if fmt == "saved_model":  # the Keras graph itself (model.export), same signature
                keras_serving = Serving(model, view.keras_forward(model), size, uint8_input)
                keras_sm = keras_serving.write_saved_model(Path(tmp) / "keras_saved_model")
                got = _saved_model_outputs(keras_sm, held_in)
                size_bytes, data, extra = _tree_size(keras_sm), None, {}
            else:
                opts, serving, sm_dir = view_for(fmt)
                data = _convert(serving, sm_dir, fmt, model, calib_in, calib_raw, samples, io_type, uint8_input,
                                qat_epochs, progress, opts, optimize)
                fmt_ref = ref
                if fmt == "qat_int8":  # compared with the fine-tuned (fake-quant) Keras model it came from
                    data, qat_model = data
                    fmt_ref = _keras_outputs(view.keras_forward(qat_model), held_model)
                it = litert.load(data)
                got = litert.predict(it, held_in)
                size_bytes = len(data)
                extra = {"io_types": litert.io_types(it), **analyze.summarize(data)}
                if optimize:
                    extra["view"] = opts.as_dict()
                if extra["flex_ops"]:
                    raise ExportError(f"{fmt}: Flex / custom ops {extra['flex_ops']} in the converted model")
            metrics = validate.compare(ref if fmt in ("saved_model",) else fmt_ref, got, samples.heldout_labels)
            passed = validate.check(fmt, metrics, thresholds)
            entry = {"format": fmt, "size_bytes": int(size_bytes), "seconds": round(time.time() - t0, 2),
                     **metrics, **extra}
            if passed or not strict:
                path = out_dir / f"{name}{FORMATS[fmt].suffix}"
                if fmt == "saved_model":
                    keras_serving.write_saved_model(path)
                else:
                    write_bytes(path, data)
                entry["path"] = str(path)
            else:
                failures.append(validate.failure(fmt, metrics))
            report["formats"][fmt] = entry
            _log(progress, f"[export] {fmt}: {size_bytes / 1e6:.2f} MB, " + _summary(metrics))
    write_text(out_dir / "labels.txt", "\n".join(names) + "\n")
    report["labels"] = str(out_dir / "labels.txt")
    write_text(out_dir / "report.json", json.dumps(report, indent=2))
    if failures and strict:
        raise failures[0] if len(failures) == 1 else type(failures[0])(
            "; ".join(str(f) for f in failures))
    return report


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
        return conv.convert()
    except Exception as e:  # noqa: BLE001 - converter errors are long MLIR dumps
        lines = [l for l in str(e).splitlines() if l.strip()]
        raise ExportError(f"{fmt}: TFLite conversion failed: {lines[-1] if lines else type(e).__name__}") from e
