"""`python -m keras_coatnet.convert`: timm .safetensors -> .weights.h5 / .keras, round-tripped on a timm fixture."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_coatnet as kc
from keras_coatnet import convert, variants
from keras_coatnet.config import TIMM_MEAN, TIMM_STD
from keras_coatnet.pretrained import read_header
from keras_coatnet.timm_weights import IGNORED_SUFFIXES

HERE = os.path.dirname(__file__)
FIXTURE = os.path.join(HERE, "fixtures", "timm", "tiny_coatnet_rmlp_nano_rw")
CONFIG, CHECKPOINT = os.path.join(FIXTURE, "config.json"), os.path.join(FIXTURE, "model.safetensors")
TOLERANCE = 1e-4


def _reference():
    with open(CONFIG) as f:
        meta = json.load(f)
    return meta, np.load(os.path.join(FIXTURE, "io.npz"))


def _max_rel_error(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_weights_h5_round_trip_and_report(tmp_path, capsys):
    out = str(tmp_path / "tiny.weights.h5")
    assert convert.main([CONFIG, CHECKPOINT, out]) == 0
    lines = capsys.readouterr().out.splitlines()
    learned = {k: s for k, s in read_header(CHECKPOINT).items() if not k.endswith(IGNORED_SUFFIXES)}
    mapped = [line for line in lines if " -> " in line and not line.startswith("Converted")]
    assert len(mapped) == len(learned)
    assert "stem.conv1.weight -> stem/conv1/kernel  [8, 3, 3, 3] -> [3, 3, 3, 8]" in lines
    assert any(line.startswith("head.fc.weight -> head__fc/kernel  [10, 96] -> [96, 10]") for line in lines)
    assert lines[-1].startswith(f"Converted {len(learned)} tensors")
    meta, ref = _reference()
    model = kc.from_timm_config(meta["timm_cfg"], input_shape=(64, 64, 3), classes=10, weights=out)
    logits = model.predict(ref["images_nhwc"], verbose=0)
    assert _max_rel_error(logits, ref["logits"]) < TOLERANCE


def test_keras_model_output_with_new_head(tmp_path, capsys, caplog):
    out = str(tmp_path / "tiny.keras")
    assert convert.main([CONFIG, CHECKPOINT, out, "--classes", "3", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert " -> " not in text.split("Converted")[0]  # --quiet: no per-tensor lines
    assert "10-class head; keeping a new 3-class classifier" in caplog.text
    model = keras.models.load_model(out)
    _, ref = _reference()
    assert model.output_shape == (None, 3)
    features = kc.feature_model(model).predict(ref["images_nhwc"], verbose=0)
    assert _max_rel_error(features[3], ref["stage3_nhwc"]) < TOLERANCE


def test_registered_name_at_another_size_loads_in_create_model(tmp_path, monkeypatch, capsys):
    """A registered name builds `create_model(name)` (preprocessing and softmax included), so the converted
    .weights.h5 loads back with `create_model(name, weights=...)` and matches a direct .safetensors load."""
    meta, ref = _reference()
    monkeypatch.setitem(variants.MODELS, "tiny_rmlp", {"config": meta["timm_cfg"], "input_size": (64, 64),
                                                       "mean": TIMM_MEAN, "std": TIMM_STD, "family": "test"})
    out = str(tmp_path / "tiny_rmlp.weights.h5")
    args = convert.parse_args(["tiny_rmlp", CHECKPOINT, out, "--input-size", "64x96", "--quiet"])
    assert args.input_size == (64, 96)
    assert convert.parse_args(["m", "c", "o", "--input-size", "96"]).input_size == (96, 96)
    assert convert.main(["tiny_rmlp", CHECKPOINT, out, "--input-size", "64x96", "--quiet"]) == 0
    assert "input (64, 96, 3)" in capsys.readouterr().out
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 96, 3)).astype("float32")
    ours = kc.create_model("tiny_rmlp", weights=out, classes=10, input_shape=(64, 96, 3)).predict(images, verbose=0)
    direct = kc.create_model("tiny_rmlp", weights=CHECKPOINT, classes=10, input_shape=(64, 96, 3))
    np.testing.assert_allclose(ours, direct.predict(images, verbose=0), rtol=0, atol=1e-6)
    assert np.allclose(ours.sum(-1), 1.0, atol=1e-5)  # softmax output, as create_model's default


@pytest.mark.parametrize("argv, message", [
    (["no_such_model", CHECKPOINT, "x.weights.h5"], "convert: error: Unknown model 'no_such_model'"),
    ([CONFIG, "missing.safetensors", "x.weights.h5"], "convert: error: Weights file not found: missing.safetensors"),
    ([CONFIG, CHECKPOINT, "x.h5"], "convert: error: Output must end in .weights.h5 or .keras; got 'x.h5'."),
])
def test_errors_are_one_line(argv, message, capsys):
    assert convert.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)


def test_debug_raises_and_bad_size_is_a_usage_error(capsys):
    with pytest.raises(ValueError, match="Output must end in"):
        convert.main([CONFIG, CHECKPOINT, "x.h5", "--debug"])
    with pytest.raises(SystemExit) as exit_info:
        convert.main([CONFIG, CHECKPOINT, "x.weights.h5", "--input-size", "big"])
    assert exit_info.value.code == 2
    assert "expected H or HxW" in capsys.readouterr().err


def test_module_entry_point_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "keras_coatnet.convert", CONFIG, str(tmp_path / "none.safetensors"),
                           str(tmp_path / "x.weights.h5")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("convert: error: Weights file not found")


def test_truncated_checkpoint_is_named_truncated_or_corrupt(tmp_path, capsys):
    cut = tmp_path / "cut.safetensors"
    data = open(CHECKPOINT, "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    assert convert.main([CONFIG, str(cut), str(tmp_path / "x.keras")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"convert: error: {cut} is truncated or corrupt (")
    assert not (tmp_path / "x.keras").exists()
