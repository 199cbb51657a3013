"""timm parity: every fixture's logits and per-stage outputs, from its config.json and model.safetensors."""

import glob
import json
import os

import numpy as np
import pytest

import keras_coatnet as kc

HERE = os.path.dirname(__file__)
# One-size fixtures (io.npz); fixtures/timm_sizes (io_HxW.npz per run-time size) are for run-time sizes.
FIXTURES = sorted(p for p in glob.glob(os.path.join(HERE, "fixtures", "timm*", "*", "config.json"))
                  if os.path.exists(os.path.join(os.path.dirname(p), "io.npz")))
# More fixture folders of the same layout (e.g. full-size models from tools/make_timm_fixtures.py --full).
EXTRA = os.environ.get("KERAS_COATNET_EXTRA_FIXTURES")
EXTRA_FIXTURES = sorted(glob.glob(os.path.join(EXTRA, "*", "config.json"))) if EXTRA else []
TOLERANCE = 1e-5


def max_rel_error(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_fixtures_present():
    assert len(FIXTURES) >= 14, FIXTURES


@pytest.mark.parametrize("config_path", FIXTURES + EXTRA_FIXTURES, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_timm_parity(config_path):
    folder = os.path.dirname(config_path)
    with open(config_path) as f:
        meta = json.load(f)
    ref = np.load(os.path.join(folder, "io.npz"))
    h, w = meta.get("load_size", meta["img_size"])
    model = kc.from_timm_config(meta["timm_cfg"], input_shape=(h, w, 3), classes=meta["num_classes"],
                                weights=os.path.join(folder, "model.safetensors"))
    images = ref["images_nhwc"]
    logits = model.predict(images, verbose=0)
    assert logits.shape == ref["logits"].shape
    assert max_rel_error(logits, ref["logits"]) < TOLERANCE
    assert np.array_equal(logits.argmax(-1), ref["logits"].argmax(-1))
    features = kc.feature_model(model).predict(images, verbose=0)
    assert len(features) == 4
    for i, feat in enumerate(features):
        assert feat.shape == ref[f"stage{i}_nhwc"].shape, i
        assert max_rel_error(feat, ref[f"stage{i}_nhwc"]) < TOLERANCE, f"stage {i}"
