"""The export formats and the TFLite converter settings of each."""

import dataclasses

import tensorflow as tf

from export.errors import ExportError

# Ops the CPU int8 formats keep in float: XNNPACK (LiteRT 2.3) has float kernels for them but no int8 ones
# (int8 BATCH_MATMUL only with a zero right-hand zero point, no int8 SOFTMAX, GELU or RSQRT);
# in int8 they would run in TFLite's own single-threaded kernels and split the graph into many partitions.
FLOAT_ISLAND_OPS = ("BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT")
# Post-training quantized by the LiteRT Quantizer (``quantize``) from the fp32 file. int16x8 and qat_int8 stay on
# the TFLite converter: the quantizer's int16x8 of this graph does not run in LiteRT 2.3 (docs/export.md).
QUANTIZER_FORMATS = ("int8", "int8_full")


@dataclasses.dataclass(frozen=True)
class Format:
    """One export format: file suffix, whether it needs calibration data, how it is validated."""

    name: str
    suffix: str
    description: str
    calibrated: bool = False
    float_islands: tuple = ()  # op types left in float (between QUANTIZE / DEQUANTIZE) in a calibrated format
    float_error: float | None = None  # max relative error allowed vs Keras (float formats)
    min_agreement: float | None = None  # min top-1 agreement with Keras (quantized formats)


FORMATS = {
    f.name: f
    for f in (
        Format("saved_model", "_saved_model", "TF SavedModel (model.export), float32", float_error=1e-5),
        Format("fp32", "_fp32.tflite", "TFLite float32", float_error=1e-4),
        Format("fp16", "_fp16.tflite", "TFLite float16 weights, float32 compute", float_error=1e-2),
        Format("dynamic", "_dynamic_int8.tflite", "TFLite dynamic-range int8 weights", min_agreement=0.98),
        Format("int8", "_int8.tflite", "TFLite int8 for CPUs (XNNPACK): int8 convs / fully-connected / adds, "
               "float only where XNNPACK has no int8 kernel", calibrated=True, float_islands=FLOAT_ISLAND_OPS,
               min_agreement=0.98),
        Format("int8_full", "_int8_full.tflite", "TFLite full-integer int8 for integer-only accelerators "
               "(NPU, DSP, Edge TPU): no float ops", calibrated=True, min_agreement=0.98),
        Format("int16x8", "_int16x8.tflite", "TFLite int16 activations, int8 weights", calibrated=True,
               min_agreement=0.98),
        Format("qat_int8", "_qat_int8.tflite", "TFLite int8 from quantization-aware fine-tuning",
               calibrated=True, float_islands=FLOAT_ISLAND_OPS, min_agreement=0.98),
    )
}
DEFAULT_FORMATS = ("saved_model", "fp32", "fp16", "dynamic", "int8", "int8_full", "int16x8")
IO_TYPES = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}


def parse_formats(names):
    """Validates a list (or comma-separated string) of format names -> list of names."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    names = list(names or DEFAULT_FORMATS)
    if "all" in names:
        names = list(DEFAULT_FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ExportError(f"unknown format(s) {unknown}; allowed: {sorted(FORMATS)} or 'all'")
    return list(dict.fromkeys(names))


def configure(converter, name, representative=None):
    """Sets ``converter`` (a tf.lite.TFLiteConverter) up for format ``name``; returns it.

    For a format quantized by the LiteRT Quantizer (``QUANTIZER_FORMATS``) that is the plain float32 conversion
    that ``quantize`` starts from. ``representative``: a zero-argument generator function of calibration inputs
    (int16x8; qat_int8: for the tensors between its fake-quant ops)."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never SELECT_TF_OPS
    if name == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif name == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif name == "int16x8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,  # ops without a 16x8 kernel (input cast) stay float
        ]
    elif name == "qat_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def convert(converter, name, representative=None, io_type="int8"):
    """TFLite bytes of format ``name`` from ``converter`` (a tf.lite.TFLiteConverter of the float graph).

    ``representative``: a zero-argument generator function yielding [input [1, H, W, 3]] lists (calibrated
    formats). ``io_type`` ("int8", "uint8", "float32"): input / output type of int8, int8_full and qat_int8;
    int16x8 has float32 input and output. A uint8 camera-input signature keeps its uint8 input whatever
    ``io_type`` says."""
    fmt = FORMATS[name]
    if fmt.calibrated and representative is None:
        raise ExportError(f"format {name!r} needs calibration data (--calibration)")
    if io_type not in IO_TYPES:
        raise ExportError(f"unknown int8 io type {io_type!r}; allowed: {sorted(IO_TYPES)}")
    configure(converter, name, representative)
    if name == "qat_int8":
        return _convert_qat(converter, representative, io_type)
    data = converter.convert()
    return quantize(data, name, representative, io_type) if name in QUANTIZER_FORMATS else data


def _convert_qat(converter, representative, io_type):
    """The QAT graph quantized by the TFLite converter (learned fake-quant ranges, the rest calibrated), with
    ``FLOAT_ISLAND_OPS`` left float: public ``tf.lite.experimental.QuantizationDebugger`` with
    ``denylisted_ops``; ``fully_quantize`` gives int8 input / output, without it they are float32 (the debugger
    has no uint8: ``export.qat`` refuses io_type uint8)."""
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FORMATS["qat_int8"].float_islands),
                                                            fully_quantize=io_type == "int8")
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative,
                                                         debug_options=options)
    return debugger.get_nondebug_quantized_model()


def _recipe(qt, name, io_type):
    """Loads format ``name``'s recipe into the LiteRT ``Quantizer`` ``qt``: static quantization of every supported op,
    int8 weights (per channel) and activations; the ``float_islands`` op types and, for float32 ``io_type``, the
    graph's input / output left float; for uint8, uint8 input / output."""
    from litert_quantizer import qtyping

    op, keep_float = qtyping.TFLOperationName, "no_quantize"
    qt.add_static_config(".*", op.ALL_SUPPORTED, 8, 8)
    for island in FORMATS[name].float_islands:
        qt.update_quantization_recipe(".*", op(island), algorithm_key=keep_float)
    if io_type == "float32":
        for end in (op.INPUT, op.OUTPUT):
            qt.update_quantization_recipe(".*", end, algorithm_key=keep_float)
    elif io_type == "uint8":
        uint8 = qtyping.TensorQuantizationConfig(8, symmetric=False, dtype=qtyping.TensorDataType.UINT)
        uint8 = qtyping.OpQuantizationConfig(activation_tensor_config=uint8,
                                             compute_precision=qtyping.ComputePrecision.INTEGER)
        for end in (op.INPUT, op.OUTPUT):
            qt.update_quantization_recipe(".*", end, uint8)


def quantize(fp32, name, representative, io_type="int8"):
    """The float32 TFLite model ``fp32`` (bytes, one signature with one input) quantized by the LiteRT Quantizer
    for format ``name`` (``QUANTIZER_FORMATS``), calibrated on the inputs ``representative()`` yields (each
    tensor's range: min and max over all of them) -> TFLite bytes. ``io_type``: "int8", "uint8" or "float32"."""
    import contextlib
    import io
    import warnings

    from ai_edge_litert.tools import flatbuffer_utils
    from litert_quantizer import Quantizer, calibrator
    from litert_quantizer.utils import qsv_utils

    qt = Quantizer(fp32)
    _recipe(qt, name, io_type)
    # quiet: the quantizer draws tqdm progress bars and warns about its own debug interpreter on stderr
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calib = calibrator.CalibrationInterpreter(fp32, calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED,
                                                  qsv_update_func=qsv_utils.min_max_update)
        (key,) = calib.get_signature_list()
        runner = calib.get_signature_runner(key)
        (input_name,) = runner.get_input_details()
        for x in representative():
            runner(**{input_name: x[0]})
        result = qt.quantize(calib.get_calibration_results(), enable_progress_bar=False,
                             enable_progress_report=False)
    # a large model comes with its weights after the flatbuffer (offset buffers); written inline here, as the
    # converter writes them (< 2 GB), for tools that read only those (export.artifacts, TF's flatbuffer_utils)
    model = flatbuffer_utils.read_model_from_bytearray(result.quantized_model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
