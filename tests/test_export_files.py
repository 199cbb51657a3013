"""No silent wrong files: input convention read from the model and carried in the files, calibration that
represents the data, destination checked first, no stale files, temp folders removed, one image decoder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import keras_coatnet
from export import ExportError, export_model, litert
from export.__main__ import main as export_cli

SIZE = 32
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _imagenet_normalize(raw):
    return ((np.asarray(raw, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def _raw_images(n=4, seed=0):
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, (n, 4, 4, 3)).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(c).resize((SIZE, SIZE), Image.BILINEAR)) for c in coarse])


def _tflite_outputs(path, images):
    it = litert.load(Path(path).read_bytes())
    return litert.predict(it, images)


def _rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def bare_model():
    """coatnet_micro without a Normalize layer (include_preprocessing=False), 10 classes, random weights."""
    keras.utils.set_random_seed(1)
    return keras_coatnet.create_model("coatnet_micro", input_shape=(SIZE, SIZE, 3), classes=10,
                                      include_preprocessing=False)


def test_normalize_layer_is_found_by_type_not_by_name(tmp_path):
    """A Normalize layer with ImageNet statistics under a name without "preprocess" / "normaliz" in it: the
    uint8-input file bakes in nothing else, so raw bytes give the Keras model's output on raw pixels."""
    from keras_coatnet.builder import build_model
    from keras_coatnet.preprocessing import Normalize
    from keras_coatnet.registry import get_entry

    keras.utils.set_random_seed(2)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = Normalize(IMAGENET_MEAN, IMAGENET_STD, name="input_scaling")(inp)
    model = build_model(get_entry("coatnet_micro")["config"], input_tensor=x, classes=10,
                        include_preprocessing=False, name="scaled_micro")
    report = export_model(model, tmp_path, formats=["fp32"], uint8_input=True, progress=None)
    raw = _raw_images()
    got = _tflite_outputs(report["formats"]["fp32"]["path"], raw)
    assert _rel_err(got, model.predict(raw.astype(np.float32), verbose=0)) < 1e-4
    assert report["input"]["values"] == "raw_0_255" and report["input"]["dtype"] == "uint8"
    assert report["input"]["normalization_in_model"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def test_model_without_normalize_layer_needs_its_mean_and_std(bare_model, tmp_path):
    with pytest.raises(ExportError, match="--input-mean"):
        export_model(bare_model, tmp_path / "a", formats=["fp32"], progress=None)
    assert export_cli([_saved(bare_model, tmp_path), str(tmp_path / "b"), "--formats", "fp32", "--quiet"]) == 2


def _saved(model, folder):
    path = Path(folder) / f"{model.name}.keras"
    if not path.exists():
        model.save(path)
    return str(path)


def test_imagenet_convention_is_baked_into_uint8_input(bare_model, tmp_path):
    report = export_model(bare_model, tmp_path, formats=["fp32"], uint8_input=True, input_mean=IMAGENET_MEAN,
                          input_std=IMAGENET_STD, progress=None)
    raw = _raw_images()
    got = _tflite_outputs(report["formats"]["fp32"]["path"], raw)
    assert _rel_err(got, bare_model.predict(_imagenet_normalize(raw), verbose=0)) < 1e-4


def test_float_file_says_it_wants_normalized_input_and_tflite_predict_normalizes(bare_model, tmp_path):
    from examples.tflite_predict import predict
    from export.metadata import read

    report = export_model(bare_model, tmp_path, formats=["fp32"], input_mean=IMAGENET_MEAN,
                          input_std=IMAGENET_STD, labels=[f"c{i}" for i in range(10)], progress=None)
    expected = {"values": "normalized", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "dtype": "float32"}
    assert {k: report["input"][k] for k in expected} == expected
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["input"] == report["input"]
    path = report["formats"]["fp32"]["path"]
    meta = read(Path(path).read_bytes())
    assert meta["input"] == report["input"] and meta["labels"] == [f"c{i}" for i in range(10)]
    raw = _raw_images(1, seed=3)
    Image.fromarray(raw[0]).save(tmp_path / "im.png")
    result = predict(path, str(tmp_path / "im.png"), top=10)
    ref = bare_model.predict(_imagenet_normalize(raw), verbose=0)[0]
    got = np.array([score for _, score in sorted(result["top"], key=lambda t: int(t[0][1:]))])
    assert _rel_err(got, ref) < 1e-4


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from examples.tflite_predict import load_image
    from export.images import decode_image

    gray8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (SIZE, 1))[:, :SIZE]
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 16-bit grayscale
    Image.fromarray(gray8).convert("P").save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    np.testing.assert_array_equal(decode_image(tmp_path / "g16.png"), np.repeat(gray8[..., None], 3, -1))
    np.testing.assert_array_equal(decode_image(str(tmp_path / "pal.png")), np.repeat(gray8[..., None], 3, -1))
    np.testing.assert_array_equal(load_image(str(tmp_path / "g16.png"), SIZE, SIZE)[0, :, :, 0], gray8)


def test_sixteen_bit_png_calibration(tmp_path):
    from export.calibration import load_samples

    for cls, level in (("dark", 40), ("light", 200)):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((SIZE, SIZE), (level + i) * 257, np.uint16)).save(tmp_path / cls / f"{i}.png")
    s = load_samples(tmp_path, (SIZE, SIZE), num_calib=6, num_heldout=4)
    assert sorted(np.unique(np.concatenate([s.calib, s.heldout]))) == [40, 41, 42, 43, 44, 200, 201, 202, 203, 204]
