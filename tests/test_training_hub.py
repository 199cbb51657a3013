"""The trainer and the Hub: `--weights hf://owner/repo` initializes from a timm checkpoint through the Hub client,
`--save-timm` writes best_timm/ (timm's files) beside best.keras, which loads back with best.keras' outputs."""

import json
import os

import keras
import numpy as np
import pytest
from conftest import point_hub_client_at
from hub_server import HubServer
from test_hub import ARCH, FIXTURE, _meta, publish
from training_utils import tiny_config

import keras_coatnet as kc
from keras_coatnet import variants
from keras_coatnet.timm_weights import read_safetensors
from training import train


def test_weights_from_the_hub_and_save_timm(tmp_path, monkeypatch):
    monkeypatch.setitem(variants.MODELS, ARCH, {"config": _meta()["timm_cfg"], "input_size": (64, 64),
                                                "family": "timm"})
    publish(tmp_path / "hub", "me/tiny")
    with HubServer(tmp_path / "hub") as server:
        point_hub_client_at(monkeypatch, server.url)
        cfg = tiny_config(tmp_path / "run", model=ARCH, image_size=64, weights="hf://me/tiny", freeze_backbone=True,
                          save_timm=True, epochs=1, steps_per_epoch=2, drop_path_rate=0.0)
        results = train.run(cfg)
    best = keras.models.load_model(results["best_model"])
    stem = read_safetensors(os.path.join(FIXTURE, "model.safetensors"))["stem.conv1.weight"]
    np.testing.assert_array_equal(best.get_layer("stem").weights[0].numpy(), stem.transpose(2, 3, 1, 0))
    folder = results["best_timm"]
    assert folder == os.path.join(tmp_path, "run", "best_timm")
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    assert config["architecture"] == ARCH and config["num_classes"] == 10
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    again = kc.from_pretrained(folder)
    np.testing.assert_allclose(again.predict(x, verbose=0), best.predict(x, verbose=0), atol=1e-6)


def test_save_timm_refuses_a_model_timm_does_not_have(tmp_path):
    with pytest.raises(ValueError, match=r"save_timm: 'coatnet_micro' is not a timm architecture"):
        train.run(tiny_config(tmp_path / "run", model="coatnet_micro", save_timm=True))
    assert not os.path.exists(tmp_path / "run")
