"""The export formats and the TFLite converter settings of each."""

import dataclasses

import tensorflow as tf

from export.errors import ExportError

# Ops the CPU int8 formats keep in float: XNNPACK (LiteRT 2.3) has float kernels for them but no int8 ones
# (int8 BATCH_MATMUL only with a zero right-hand zero point, no int8 SOFTMAX, GELU or RSQRT);
# in int8 they would run in TFLite's own single-threaded kernels and split the graph into many partitions.
FLOAT_ISLAND_OPS = ("BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT")


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


def configure(converter, name, representative=None, io_type="float32", float_input=True):
    """Sets ``converter`` (a tf.lite.TFLiteConverter) up for format ``name``; returns it.

    ``representative`` is a zero-argument generator function of calibration inputs (calibrated formats).
    Convert with ``convert(converter, name)`` (formats with float islands are quantized in two steps).
    ``io_type`` ("float32", "int8", "uint8") is the input/output type of an int8 model (int8, int8_full, qat_int8);
    a uint8 camera-input signature keeps its uint8 input whatever ``io_type`` says.
    """
    fmt = FORMATS[name]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never SELECT_TF_OPS
    if name == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif name == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt.calibrated:
        if representative is None and name != "qat_int8":
            raise ExportError(f"format {name!r} needs calibration data (--calibration)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if representative is not None:
            converter.representative_dataset = representative
        if name == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,  # ops without a 16x8 kernel (input cast) stay float
            ]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if fmt.float_islands:
                converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
            if io_type not in IO_TYPES:
                raise ExportError(f"unknown int8 io type {io_type!r}; allowed: {sorted(IO_TYPES)}")
            converter.inference_output_type = IO_TYPES[io_type]
            if float_input:
                converter.inference_input_type = IO_TYPES[io_type]
    return converter


def convert(converter, name):
    """TFLite bytes from ``converter`` as set up by ``configure(converter, name, ...)``.

    A format with ``float_islands`` is quantized selectively: calibrate, then quantize every op but those op
    types, which stay float between QUANTIZE / DEQUANTIZE (XNNPACK takes both). That is what the public
    ``tf.lite.experimental.QuantizationDebugger(denylisted_ops=...)`` does, but it cannot set the int8 / uint8
    input and output types, so its two steps are called directly (``export._compat``)."""
    islands = FORMATS[name].float_islands
    if not islands:
        return converter.convert()
    from export._compat import quantize_with_float_islands

    return quantize_with_float_islands(converter, islands)
