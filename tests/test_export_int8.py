"""The two int8 formats: ``int8`` for CPUs (one XNNPACK partition, float islands) and ``int8_full`` (integer only).

Graph properties and accuracy only (no timings): they do not depend on the CPU the tests run on."""

import numpy as np
import pytest

from export import export_model, litert
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


def test_cpu_int8_accuracy_matches_keras(both_int8):
    int8, full = both_int8["int8"], both_int8["int8_full"]
    assert int8["n"] == 360 and int8["keras_accuracy"] > 0.8
    assert abs(int8["accuracy"] - int8["keras_accuracy"]) <= 0.005
    assert int8["top1_agreement"] >= 0.995
    print(f"max rel error: int8 {int8['max_rel_error']:.4f}, int8_full {full['max_rel_error']:.4f}")


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
    # outside XNNPACK only the graph's ends: the uint8 -> float CAST of the input (LiteRT 2.3's XNNPACK has no
    # CAST) and, for a uint8 output, the int8 -> uint8 QUANTIZE of the [1, 10] output
    edges = {"CAST": 1} if io_type != "uint8" else {"CAST": 1, "QUANTIZE": 1}
    assert int8["not_delegated"] == edges and int8["xnnpack_partitions"] == 1
    x, _ = digits_split(SIZE, "test")
    raw = np.round(x[:100]).astype(np.uint8)
    want = trained[1].predict(raw.astype("float32"), verbose=0).argmax(-1)
    it = litert.load(int8["path"])
    detail = it.get_input_details()[0]
    preds = []
    for img in raw:
        it.set_tensor(detail["index"], img[None])  # bytes as they come from the camera
        it.invoke()
        preds.append(it.get_tensor(it.get_output_details()[0]["index"])[0].argmax())
    assert np.mean(np.array(preds) == want) >= 0.98


@pytest.mark.parametrize("text,model,dots", [
    ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512_vnni amx_int8\n",
     "Intel(R) Xeon(R) Processor", ["AVX512-VNNI", "AMX-INT8"]),
    ("processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu avx2 fma\n", "AMD EPYC 7B12", []),
    ("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd41\nHardware\t: Qualcomm SM8550\n",
     "Qualcomm SM8550", ["ARM dotprod", "ARM i8mm"]),
])
def test_machine_names_cpu_and_int8_dot_products(tmp_path, text, model, dots):
    from export import machine

    (tmp_path / "cpuinfo").write_text(text)
    info = machine.describe(tmp_path / "cpuinfo")
    assert info["cpu"] == model and info["int8_dot_product"] == dots
    assert info["litert"].startswith(("ai-edge-litert ", "tensorflow "))
    assert ("int8 dot products: " + (", ".join(dots) or "none")) in machine.line(info)
