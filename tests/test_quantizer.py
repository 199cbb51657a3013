"""int8 and int8_full come from the LiteRT Quantizer (``export.formats.quantize``), int16x8 from the TFLite
converter and qat_int8 from the public ``tf.lite.experimental.QuantizationDebugger``: which op computes in which
type, op by op (no timings)."""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_coatnet
from export import export_model, formats, runtime
from export.errors import ExportError

INT8_OPS = ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "ADD", "MUL")


def _types(data):
    """{op name: set of output dtype names} of a .tflite (bytes or path), QUANTIZE / DEQUANTIZE and the
    XNNPACK DELEGATE nodes left out."""
    data = open(data, "rb").read() if isinstance(data, str) else data
    out = collections.defaultdict(set)
    for name, _, outs in runtime.op_table(data):
        if name not in ("QUANTIZE", "DEQUANTIZE", "DELEGATE"):
            out[name] |= {o.name for o in outs}
    return dict(out)


@pytest.fixture(scope="module")
def tiny():
    """coatnet_micro, 32x32, 10 classes, seeded random weights."""
    keras.utils.set_random_seed(0)
    return keras_coatnet.create_model("coatnet_micro", input_shape=(32, 32, 3), classes=10)


@pytest.fixture(scope="module")
def quantized(tiny, tmp_path_factory):
    """{format: report entry} of ``tiny`` in the post-training quantized formats."""
    report = export_model(tiny, tmp_path_factory.mktemp("quantized"), formats=["int8", "int8_full", "int16x8"],
                          calibration_source="random", num_calib=8, num_heldout=8, strict=False, progress=None)
    return report["formats"]


def test_int8_leaves_exactly_the_float_islands_in_float(quantized):
    types = _types(quantized["int8"]["path"])
    assert {op for op, t in types.items() if "float32" in t} == set(formats.FLOAT_ISLAND_OPS)
    for op in formats.FLOAT_ISLAND_OPS:
        assert types[op] == {"float32"}, op
    for op in INT8_OPS:
        assert types[op] == {"int8"}, op
    assert quantized["int8"]["xnnpack_partitions"] == 1 and quantized["int8"]["not_delegated"] == {}


def test_int8_full_has_no_float_tensor(quantized):
    entry = quantized["int8_full"]
    it = runtime.load(entry["path"])
    float_tensors = [t["name"] for t in it.get_tensor_details() if np.dtype(t["dtype"]).kind == "f"]
    assert float_tensors == [] and entry["float_ops"] == {}
    assert entry["view"]["rel_bias"] == "constant"  # the table's TILE / ABS / MINIMUM would stay float
    assert tuple(entry["io_types"]) == ("int8", "int8")


def test_int16x8_activations_are_int16(quantized):
    types = _types(quantized["int16x8"]["path"])
    for op in INT8_OPS:
        assert types[op] == {"int16"}, op
    assert tuple(quantized["int16x8"]["io_types"]) == ("float32", "float32")


@pytest.mark.parametrize("io_type", ["float32", "uint8"])
def test_int8_io_types(tiny, tmp_path, io_type):
    report = export_model(tiny, tmp_path, formats=["int8"], calibration_source="random", num_calib=8,
                          num_heldout=8, io_type=io_type, strict=False, progress=None)
    int8 = report["formats"]["int8"]
    assert tuple(int8["io_types"]) == (io_type, io_type)
    edges = {"QUANTIZE": 1} if io_type == "uint8" else {}  # the input's uint8 -> int8 requantize, not in XNNPACK
    assert int8["xnnpack_partitions"] == 1 and int8["not_delegated"] == edges
    assert set(int8["float_ops"]) == set(formats.FLOAT_ISLAND_OPS)


def test_int8_full_refuses_the_table_bias(tiny, tmp_path):
    with pytest.raises(ExportError, match="rel_bias 'constant'"):
        export_model(tiny, tmp_path, formats=["int8_full"], calibration_source="random", num_calib=8,
                     num_heldout=8, rel_bias="table", progress=None)


def _dense_softmax():
    inp = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="out")(hidden))


@pytest.mark.parametrize("io_type", ["int8", "float32"])
def test_qat_conversion_keeps_the_float_islands_float(io_type):
    """qat_int8's converter path (here on a graph without fake-quant ops: all ranges calibrated)."""
    rep = lambda: ([np.random.default_rng(i).normal(size=(1, 4)).astype("float32")] for i in range(16))  # noqa: E731
    data = formats.convert(tf.lite.TFLiteConverter.from_keras_model(_dense_softmax()), "qat_int8", rep, io_type)
    types = _types(data)
    assert types["SOFTMAX"] == {"float32"} and types["FULLY_CONNECTED"] == {"int8"}
    assert runtime.io_types(runtime.load(data)) == (io_type, io_type)
