"""``export_model``: a trained CoAtNet -> validated SavedModel / TFLite files + labels.txt + report.json."""

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from export import analyze, calibration, litert, loading, machine, metadata, validate, view
from export.convention import describe, input_convention, to_model_input
from export.errors import ExportError
from export.formats import FORMATS, convert, parse_formats, view_options
from export.labels import class_labels
from export.request import ExportRequest
from export.serving import Serving
from keras_coatnet.atomic import atomic_path, exit_on_sigterm, remove, replace, writable_folder, write_bytes, write_text
from keras_coatnet.cli import SCRATCH_PREFIX

REPORT = "report.json"
LABELS = "labels.txt"

FLOAT_VIEW_TOLERANCE = 1e-4


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
        input_size: (H, W) or int, multiples of 32: the model's built size, or any for a run-time-size model.
        uint8_input: the signature takes raw RGB bytes (uint8) with normalization baked in.
        io_type: input/output type of int8 / int8_full / qat_int8 ("int8", "uint8" or "float32").
        optimize, gelu, attention, rel_bias: the export view (``export.view.Options``; "auto" picks per format);
            optimize=False converts the Keras graph as it is.
        strict: raise ValidationError after writing the passing formats if any format fails validation.
        thresholds: {format: limit} overriding the per-format validation thresholds.
        input_mean, input_std: (R, G, B) on the 0-1 scale, required for (and only for) a model without a
            ``Normalize`` layer (include_preprocessing=False): the normalization its input expects.
        seed: the seed of the stratified calibration / held-out sampling.
    The options travel to the conversion steps as one ``export.request.ExportRequest``.
    With an approximate ``gelu`` the view is checked with exact GELU against Keras (1e-4), and a float file is
    held to its format's bound against the approximated graph plus top-1 agreement with Keras
    (``export.validate.thresholds_for``).
    ``out_dir`` is checked (or created) before anything is converted. Nothing is written for a format that fails
    to convert or validate; files appear atomically when every format is done, each ``.tflite`` carrying
    ``export.metadata`` (input convention, labels); report.json lists every file written ("files", the
    manifest); files of an earlier export in ``out_dir`` (its manifest, or this model's format names) that
    this export did not write are removed. Temporary folders are removed on errors, Ctrl-C and SIGTERM.
    """
    request = ExportRequest(
        formats=parse_formats(formats), calibration_source=calibration_source, input_size=input_size,
        uint8_input=uint8_input, io_type=io_type, num_calib=num_calib, num_heldout=num_heldout, optimize=optimize,
        gelu=gelu, attention=attention, rel_bias=rel_bias, labels=labels, strict=strict, thresholds=thresholds,
        name=name, qat_epochs=qat_epochs, progress=progress, input_mean=input_mean, input_std=input_std, seed=seed)
    created = not os.path.exists(out_dir)
    try:
        out_dir = writable_folder(out_dir)
    except OSError as e:
        raise ExportError(str(e)) from None
    try:
        return _export_into(model_or_path, out_dir, request, input_size, name, input_mean, input_std,
                            calibration_source, num_calib, num_heldout, labels, strict)
    except BaseException:
        if created and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)  # a failed export leaves no new, empty output folder behind
        raise


def _export_into(model_or_path, out_dir, request, input_size, name, input_mean, input_std, calibration_source,
                 num_calib, num_heldout, labels, strict):
    """The body of ``export_model`` once ``out_dir`` is a writable folder."""
    model = loading.load_model(model_or_path)
    loading.check_coatnet(model)
    request = dataclasses.replace(request, input_size=loading.input_size(model, input_size),
                                  name=name or model.name)
    convention = input_convention(model, input_mean, input_std)
    needs_calib = bool(request.calibrated_formats)
    if needs_calib and calibration_source is None:
        raise ExportError(f"formats {request.calibrated_formats} need --calibration "
                          "(digits, an image folder, a TFRecord or a training config)")
    calibration.check_counts(num_calib, num_heldout, calibrated=needs_calib)
    names = class_labels(_num_outputs(model), labels if labels is not None else getattr(model, "label_names", None),
                         calibration_source)
    with exit_on_sigterm(), tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX) as tmp, \
            tempfile.TemporaryDirectory(prefix=".coatnet_export_", dir=out_dir) as staging:
        try:
            report, failures = _export(model, request, convention, names, Path(tmp), Path(staging), out_dir)
            _publish(Path(staging), out_dir, report, names, request.name)
        except OSError as e:
            raise _named_in(e, Path(staging), out_dir) from e
    if failures and strict:
        raise failures[0] if len(failures) == 1 else type(failures[0])(
            "; ".join(str(f) for f in failures))
    return report


def _num_outputs(model):
    return int(model.outputs[0].shape[-1])


def _export(model, request, convention, names, tmp, staging, out_dir):
    """Converts and validates every format of ``request`` into ``staging`` (``tmp``: scratch folder);
    returns (report, validation failures). ``convention``: the model's input convention; ``names``: labels."""
    size, name = request.input_size, request.name
    request.log(f"[export] {name}: {size[0]}x{size[1]}, formats {request.formats}")
    if request.calibration_source is not None:
        min_calib = calibration.MIN_CALIBRATION if request.calibrated_formats else 0
        samples = calibration.load_samples(request.calibration_source, size, request.num_calib,
                                           request.num_heldout, seed=request.seed, min_calib=min_calib)
    else:
        samples = calibration.random_samples(size, num_calib=1, num_heldout=8)
    calib_raw = np.round(samples.calib)
    held_raw = np.round(samples.heldout)
    held_model = to_model_input(held_raw, convention)
    calib_in = calib_raw if request.uint8_input else to_model_input(calib_raw, convention)
    held_in = held_raw if request.uint8_input else held_model

    request.view_options()  # an unknown gelu / attention / rel_bias mode is refused before anything is converted
    approx_gelu = request.optimize and request.gelu != "exact"  # a different function on purpose
    ref = _keras_outputs(view.keras_forward(model), held_model)
    input_info = {**describe(convention, request.uint8_input), "size": list(size)}
    per_class = samples.per_class()
    report = {"model": name, "input_size": list(size), "uint8_input": bool(request.uint8_input),
              "input_dtype": request.input_dtype, "input": input_info,
              "calibration": samples.source, "num_calibration": int(len(calib_raw)),
              "num_heldout": int(len(held_raw)), "calibration_per_class": per_class["calibration"],
              "heldout_per_class": per_class["heldout"], "seed": int(request.seed),
              "optimize": bool(request.optimize), "gelu": request.gelu, "attention": request.attention,
              "rel_bias": request.rel_bias, "machine": machine.describe(), "formats": {}}
    failures = []
    views = {}  # resolved view options -> (options, Serving, SavedModel dir): one graph per distinct choice

    def view_for(fmt):
        opts = view_options(request, fmt)
        key = tuple(opts.as_dict().values()) if request.optimize else "keras"
        if key not in views:
            forward = view.forward(model, opts) if request.optimize else view.keras_forward(model)
            if request.optimize:  # the graph rewrite checked exactly: with exact GELU, whatever GELU it exports
                exact = view.forward(model, view.Options("exact", opts.attention, opts.rel_bias))
                err = check_view(model, exact, held_model[:4])
                report["view_max_rel_error"] = max(err, report.get("view_max_rel_error", 0.0))
                request.log(f"[export] export view {opts.as_dict()} matches Keras (max rel error {err:.2e})")
            serving = Serving(model, forward, size, request.uint8_input, convention)
            graph_ref = _keras_outputs(forward, held_model) if approx_gelu else None
            views[key] = (opts, serving, serving.write_saved_model(tmp / f"saved_model_{len(views)}"), graph_ref)
        return views[key]

    for fmt in request.formats:
        t0 = time.time()
        request.log(f"[export] {fmt}: converting")
        if fmt == "saved_model":  # the Keras graph itself (model.export), same signature
            keras_serving = Serving(model, view.keras_forward(model), size, request.uint8_input, convention)
            keras_sm = keras_serving.write_saved_model(tmp / "keras_saved_model")
            got = _saved_model_outputs(keras_sm, held_in)
            size_bytes, data, extra = _tree_size(keras_sm), None, {}
        else:
            opts, serving, sm_dir, graph_ref = view_for(fmt)
            fmt_ref = ref
            if fmt == "qat_int8":  # compared with the fine-tuned (fake-quant) Keras model it came from
                from export import qat

                data, qat_model = qat.export_qat(model, request, convention, samples, calib_in)
                fmt_ref = _keras_outputs(view.keras_forward(qat_model), held_model)
            else:
                data = _convert(fmt, request, serving, sm_dir, calib_in)
            data = metadata.add(data, {"model": name, "format": fmt, "input": input_info, "labels": names,
                                       "output": serving.output_name})
            it = litert.load(data)
            got = litert.predict(it, held_in)
            size_bytes = len(data)
            extra = {"io_types": litert.io_types(it), **analyze.summarize(data)}
            if request.optimize:
                extra["view"] = opts.as_dict()
            if extra["flex_ops"]:
                raise ExportError(f"{fmt}: Flex / custom ops {extra['flex_ops']} in the converted model")
        metrics = validate.compare(ref if fmt in ("saved_model",) else fmt_ref, got, samples.heldout_labels)
        fmt_approx = approx_gelu and fmt != "saved_model" and FORMATS[fmt].float_error is not None
        if fmt_approx:  # the file against the approximated graph it was converted from
            metrics["graph_max_rel_error"] = validate.compare(graph_ref, got)["max_rel_error"]
        passed = validate.check(fmt, metrics, request.thresholds, approx_gelu=fmt_approx)
        entry = {"format": fmt, "size_bytes": int(size_bytes), "seconds": round(time.time() - t0, 2),
                 **metrics, **extra}
        if passed or not request.strict:
            file_name = f"{name}{FORMATS[fmt].suffix}"
            if fmt == "saved_model":  # the folder just validated, moved into place whole
                with atomic_path(staging / file_name) as dst:
                    shutil.move(keras_sm, dst)
            else:
                write_bytes(staging / file_name, data)
            entry["path"] = str(out_dir / file_name)
        else:
            failures.append(validate.failure(fmt, metrics))
        report["formats"][fmt] = entry
        request.log(f"[export] {fmt}: {size_bytes / 1e6:.2f} MB, " + _summary(metrics))
    return report, failures


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
    """Writes labels.txt and report.json (the manifest) into ``staging``, moves every staged file into
    ``out_dir`` (renames: nothing there changes until every file is written whole, report.json last), then
    removes an earlier export's files not written now."""
    write_text(staging / LABELS, "\n".join(names) + "\n")
    written = sorted(p.name for p in staging.iterdir())
    report["files"] = {f: dict(zip(("bytes", "sha256"), metadata.digest(staging / f))) for f in written}
    report["files"][REPORT] = {"bytes": None, "sha256": None}  # this file
    stale = sorted(f for f in _previous_files(out_dir, name) - set(report["files"])
                   if (out_dir / f).exists() or (out_dir / f).is_symlink())
    report["labels"] = str(out_dir / LABELS)
    report["removed_stale_files"] = stale
    write_text(staging / REPORT, json.dumps(report, indent=2))
    for f in [*written, REPORT]:
        replace(staging / f, out_dir / f)
    for f in stale:
        remove(out_dir / f)


def _named_in(error, staging, out_dir):
    """``error`` with a file under ``staging`` named as its place in ``out_dir`` (the name the user asked for)."""
    where = error.filename and Path(error.filename)
    if not where or staging not in where.parents:
        return error
    return type(error)(error.errno, error.strerror, str(out_dir / where.relative_to(staging)))


def _summary(m):
    s = (f"max rel err {m['max_rel_error']:.2e}, top-1 agreement {m['top1_agreement']:.1%} "
         f"({m['confident_agreement']:.1%} where Keras is sure; {m['near_tie_flips']} of {m['near_ties']} "
         "near-ties flipped)")
    if "accuracy" in m:
        s += f", accuracy {m['accuracy']:.1%} (Keras {m['keras_accuracy']:.1%})"
    return s + ("" if m["passed"] else "  FAILED")


def _tree_size(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _convert(fmt, request, serving, sm_dir, calib_in):
    """TFLite bytes for one format (not qat_int8) from the SavedModel ``sm_dir`` written by ``serving``;
    ``calib_in``: calibration images [N, H, W, 3] as the exported input takes them."""
    rep = calibration.representative(calib_in, request.input_dtype) if FORMATS[fmt].calibrated else None
    try:
        return convert(serving.converter(sm_dir), fmt, rep, request.io_type)
    except Exception as e:  # noqa: BLE001 - converter errors are long MLIR dumps
        lines = [l for l in str(e).splitlines() if l.strip()]
        raise ExportError(f"{fmt}: TFLite conversion failed: {lines[-1] if lines else type(e).__name__}") from e
