"""``export_model``: a trained CoAtNet -> validated SavedModel / TFLite files + labels.txt + report.json."""

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from export import artifacts, calibration, graph, model_input, runtime, validate
from export.artifacts import class_labels
from export.errors import ExportError
from export.formats import FORMATS, convert, parse_formats
from export.graph import Serving
from export.model_input import describe, input_convention, to_model_input
from export.request import ExportRequest, signature
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
    ref = _keras_outputs(graph.keras_forward(model), images)
    got = _keras_outputs(forward, images)
    err = float(np.abs(ref - got).max() / max(np.abs(ref).max(), 1e-12))
    if err > tolerance:
        raise ExportError(f"export view disagrees with the Keras model (max rel error {err:.3g} > {tolerance:g}); "
                          "export with optimize=False (--no-optimize) and report this")
    return err


def export_model(model_or_path, out_dir, **options):
    """Exports ``model_or_path`` (a model or a .keras file) to ``out_dir``; returns the report dict (also
    report.json).

    ``options`` are the fields of ``export.request.ExportRequest`` (``help(ExportRequest)``, or
    ``python -m export --help``): formats, calibration_source, input_size, ... With an approximate ``gelu`` the
    view is checked with exact GELU against Keras (1e-4), and a float file is held to its format's bound against
    the approximated graph plus top-1 agreement with Keras (``export.validate.thresholds_for``).
    ``out_dir`` is checked (or created) before anything is converted. Nothing is written for a format that fails
    to convert or validate; files appear atomically when every format is done, each ``.tflite`` carrying
    ``export.artifacts`` (input convention, labels); report.json lists every file written ("files", the
    manifest); files of an earlier export in ``out_dir`` (its manifest, or this model's format names) that
    this export did not write are removed. Temporary folders are removed on errors, Ctrl-C and SIGTERM.
    """
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(ExportRequest)})
    if unknown:
        raise TypeError(f"export_model() got unknown option(s) {unknown}; see help(export.request.ExportRequest)")
    request = ExportRequest(**options)
    request = dataclasses.replace(request, formats=parse_formats(request.formats))
    created = not os.path.exists(out_dir)
    try:
        out_dir = writable_folder(out_dir)
    except OSError as e:
        raise ExportError(str(e)) from None
    try:
        return _export_into(model_or_path, out_dir, request)
    except BaseException:
        if created and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)  # a failed export leaves no new, empty output folder behind
        raise


export_model.__signature__ = signature(("model_or_path", "out_dir"))


def _export_into(model_or_path, out_dir, request):
    """The body of ``export_model`` once ``out_dir`` is a writable folder."""
    model = model_input.load_model(model_or_path)
    model_input.check_coatnet(model)
    request = dataclasses.replace(request, input_size=model_input.input_size(model, request.input_size),
                                  name=request.name or model.name)
    convention = input_convention(model, request.input_mean, request.input_std)
    needs_calib = bool(request.calibrated_formats)
    if needs_calib and request.calibration_source is None:
        raise ExportError(f"formats {request.calibrated_formats} need --calibration "
                          "(digits, an image folder, a TFRecord or a training config)")
    calibration.check_counts(request.num_calib, request.num_heldout, calibrated=needs_calib)
    labels = request.labels if request.labels is not None else getattr(model, "label_names", None)
    names = class_labels(_num_outputs(model), labels, request.calibration_source)
    with exit_on_sigterm(), tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX) as tmp, \
            tempfile.TemporaryDirectory(prefix=".coatnet_export_", dir=out_dir) as staging:
        try:
            report, failures = _export(model, request, convention, names, Path(tmp), Path(staging), out_dir)
            _publish(Path(staging), out_dir, report, names, request.name)
        except OSError as e:
            raise _named_in(e, Path(staging), out_dir) from e
    if failures and request.strict:
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
    ref = _keras_outputs(graph.keras_forward(model), held_model)
    input_info = {**describe(convention, request.uint8_input), "size": list(size)}
    per_class = samples.per_class()
    report = {"model": name, "input_size": list(size), "uint8_input": bool(request.uint8_input),
              "input_dtype": request.input_dtype, "input": input_info,
              "calibration": samples.source, "num_calibration": int(len(calib_raw)),
              "num_heldout": int(len(held_raw)), "calibration_per_class": per_class["calibration"],
              "heldout_per_class": per_class["heldout"], "seed": int(request.seed),
              "optimize": bool(request.optimize), "gelu": request.gelu, "attention": request.attention,
              "rel_bias": request.rel_bias, "machine": runtime.describe_machine(), "formats": {}}
    failures = []
    views = {}  # resolved view options -> (options, Serving, SavedModel dir): one graph per distinct choice

    def view_for(fmt):
        opts = request.view_options(fmt)
        key = tuple(opts.as_dict().values()) if request.optimize else "keras"
        if key not in views:
            forward = graph.forward(model, opts) if request.optimize else graph.keras_forward(model)
            if request.optimize:  # the graph rewrite checked exactly: with exact GELU, whatever GELU it exports
                exact = graph.forward(model, graph.Options("exact", opts.attention, opts.rel_bias))
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
            keras_serving = Serving(model, graph.keras_forward(model), size, request.uint8_input, convention)
            keras_sm = keras_serving.write_saved_model(tmp / "keras_saved_model")
            got = _saved_model_outputs(keras_sm, held_in)
            size_bytes, data, extra = _tree_size(keras_sm), None, {}
        else:
            opts, serving, sm_dir, graph_ref = view_for(fmt)
            fmt_ref = ref
            if fmt == "qat_int8":  # compared with the fine-tuned (fake-quant) Keras model it came from
                from export import qat

                data, qat_model = qat.export_qat(model, request, convention, samples, calib_in)
                fmt_ref = _keras_outputs(graph.keras_forward(qat_model), held_model)
            else:
                data = _convert(fmt, request, serving, sm_dir, calib_in)
            data = artifacts.add(data, {"model": name, "format": fmt, "input": input_info, "labels": names,
                                       "output": serving.output_name})
            it = runtime.load(data)
            got = runtime.predict(it, held_in)
            size_bytes = len(data)
            extra = {"io_types": runtime.io_types(it), **runtime.summarize(data)}
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
    report["files"] = {f: dict(zip(("bytes", "sha256"), artifacts.digest(staging / f))) for f in written}
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
