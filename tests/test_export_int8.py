"""The two int8 formats: ``int8`` for CPUs (one XNNPACK partition, float islands) and ``int8_full`` (integer only).

Graph properties and accuracy only (no timings): they do not depend on the CPU the tests run on."""

import numpy as np
import pytest

from export import export_model, runtime, validate
from export.calibration import digits_split
from keras_coatnet import from_timm_config, variants
from tests.test_export import SIZE, trained  # noqa: F401 - the session fixture (a coatnet_micro trained on digits)


@pytest.fixture(scope="session")
def both_int8(trained):  # noqa: F811
    out = trained[0].parent / "int8_formats"
    report = export_model(trained[0], out, formats=["int8", "int8_full"], calibration_source="digits",
                          num_heldout=360, progress=None)
    return report["formats"]


def coatnet_0_shaped(size=64):
    """CoAtNet-0's block layout (stem, depths 2-3-5-2, C-C-T-T) with tiny widths, random weights."""
    cfg = variants.PAPER_CONFIGS["coatnet_0"]
    tiny = {**cfg, "stem_width": 16, "embed_dim": (16, 24, 32, 64), "head_hidden_size": 64}
    return from_timm_config(tiny, input_shape=(size, size, 3), classes=10, include_preprocessing=True,
                            name="coatnet_0_shaped")


def test_cpu_int8_is_one_xnnpack_partition(both_int8):
    int8 = both_int8["int8"]
    assert int8["passed"] and not int8["flex_ops"]
    assert int8["not_delegated"] == {}  # every op runs in XNNPACK
    assert int8["xnnpack_partitions"] == 1
    assert int8["io_types"] in (("int8", "int8"), ["int8", "int8"])
    # float only where XNNPACK has no int8 kernel; convs and fully-connected layers are int8
    assert set(int8["float_ops"]) <= {"BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT", "AVERAGE_POOL_2D"}
    assert "FULLY_CONNECTED" not in int8["float_ops"] and "CONV_2D" not in int8["float_ops"]


def test_int8_full_has_no_float_ops(both_int8):
    full = both_int8["int8_full"]
    assert full["passed"] and full["float_ops"] == {}
    assert full["io_types"] in (("int8", "int8"), ["int8", "int8"])


def _agreement_on_digits(trained, tflite_bytes, input_gain=1.0):  # noqa: F811
    """validate.compare of a .tflite (bytes) against the Keras model on the 360 rounded test digits, fed to the
    file multiplied by ``input_gain``."""
    x, y = digits_split(SIZE, "test")
    x = np.round(x)
    got = runtime.predict(runtime.load(tflite_bytes), x * input_gain)
    return validate.compare(trained[1].predict(x, verbose=0), got, y)


def test_cpu_int8_agrees_with_keras_wherever_keras_is_sure(both_int8):
    """Every image whose top-1 logit leads by more than validate.NEAR_TIE_LOGITS keeps its class; near-ties
    (a few of 360: chance of the training run and the CPU) may flip within the binomial limit."""
    for fmt in ("int8", "int8_full"):
        e = both_int8[fmt]
        assert e["n"] == 360 and e["keras_accuracy"] > 0.8, fmt
        assert e["near_ties"] <= 0.2 * e["n"], fmt  # the check has sure images to judge (measured 16 of 360 on an AMD EPYC)
        assert e["confident_agreement"] == 1.0, (fmt, e)
        assert e["near_tie_flips"] <= validate.near_tie_flip_limit(e["near_ties"]), (fmt, e)
        # accuracy moves only through the near-ties it flipped
        assert abs(e["accuracy"] - e["keras_accuracy"]) * e["n"] <= e["near_tie_flips"] + 1e-9, (fmt, e)
    print(f"max rel error: int8 {both_int8['int8']['max_rel_error']:.4f}, "
          f"int8_full {both_int8['int8_full']['max_rel_error']:.4f}")


def _edited(path, edit):
    """(the .tflite at ``path`` as bytes after ``edit(subgraph, model)`` changed its flatbuffer object tree, the
    input gain ``edit`` returned)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(open(path, "rb").read()))
    gain = edit(model.subgraphs[0], model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), gain


def _scale_input(subgraph, model):
    """The graph reads its int8 input at twice the scale it was calibrated for (a wrong input convention).
    Fed x * 2, the images arrive as the same int8 values as in the real file: only the graph's reading moved."""
    subgraph.tensors[subgraph.inputs[0]].quantization.scale *= 2.0
    return 2.0


def _wrong_layer_range(subgraph, model):
    """One mid-network conv's output quantized to an 8x too narrow range (as from a bad calibration): it clips.
    (A range 4x too wide, only coarser, measured harmless: every sure digit kept its class.)"""
    conv = [op for op in subgraph.operators if model.operatorCodes[op.opcodeIndex].builtinCode == 3]  # CONV_2D
    subgraph.tensors[conv[len(conv) // 2].outputs[0]].quantization.scale /= 8.0
    return 1.0


@pytest.mark.parametrize("fmt", ["int8", "int8_full"])
@pytest.mark.parametrize("breakage", [_scale_input, _wrong_layer_range], ids=["input_scale", "layer_range"])
def test_agreement_check_refuses_a_broken_int8_file(both_int8, trained, fmt, breakage):  # noqa: F811
    good = _agreement_on_digits(trained, open(both_int8[fmt]["path"], "rb").read())
    assert good["confident_agreement"] == 1.0 and validate.check(fmt, good)  # the same check, the real file
    bad = _agreement_on_digits(trained, *_edited(both_int8[fmt]["path"], breakage))
    assert not validate.check(fmt, bad), bad
    assert bad["confident_agreement"] < 0.98, bad


def test_coatnet_0_shaped_int8_is_one_xnnpack_partition(tmp_path):
    model = coatnet_0_shaped()
    report = export_model(model, tmp_path, formats=["int8", "int8_full"], calibration_source="random",
                          num_calib=8, num_heldout=8, strict=False, progress=None)
    int8, full = report["formats"]["int8"], report["formats"]["int8_full"]
    assert int8["not_delegated"] == {} and int8["xnnpack_partitions"] == 1, int8["not_delegated"]
    assert full["float_ops"] == {}


@pytest.mark.parametrize("io_type", ["uint8", "float32"])
def test_cpu_int8_camera_input_and_output_types(trained, tmp_path, io_type):  # noqa: F811
    report = export_model(trained[0], tmp_path, formats=["int8"], calibration_source="digits", uint8_input=True,
                          io_type=io_type, num_heldout=100, progress=None)
    int8 = report["formats"]["int8"]
    assert tuple(int8["io_types"]) == ("uint8", io_type)
    # outside XNNPACK only the uint8 -> float CAST of the input (LiteRT 2.3's XNNPACK has no CAST); a uint8
    # output is quantized straight from the float softmax, inside XNNPACK
    assert int8["not_delegated"] == {"CAST": 1} and int8["xnnpack_partitions"] == 1
    x, _ = digits_split(SIZE, "test")
    raw = np.round(x[:100]).astype(np.uint8)
    want = trained[1].predict(raw.astype("float32"), verbose=0)
    it = runtime.load(int8["path"])
    assert it.get_input_details()[0]["dtype"] == np.uint8
    got = runtime.predict(it, raw)  # the bytes as they come from the camera, as they are
    assert validate.compare(want, got)["confident_agreement"] == 1.0


@pytest.mark.parametrize("text,model,dots", [
    ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512_vnni amx_int8\n",
     "Intel(R) Xeon(R) Processor", ["AVX512-VNNI", "AMX-INT8"]),
    ("processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu avx2 fma\n", "AMD EPYC 7B12", []),
    ("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd41\nHardware\t: Qualcomm SM8550\n",
     "Qualcomm SM8550", ["ARM dotprod", "ARM i8mm"]),
])
def test_machine_names_cpu_and_int8_dot_products(tmp_path, text, model, dots):
    from export import runtime

    (tmp_path / "cpuinfo").write_text(text)
    info = runtime.describe_machine(tmp_path / "cpuinfo")
    assert info["cpu"] == model and info["int8_dot_product"] == dots
    assert info["litert"].startswith(("ai-edge-litert ", "tensorflow "))
    assert ("int8 dot products: " + (", ".join(dots) or "none")) in runtime.machine_line(info)
