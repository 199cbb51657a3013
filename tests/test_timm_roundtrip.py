"""The way back to timm, checked by timm itself (PyTorch, in its own environment: `make test` builds it; the
path is $KERAS_COATNET_TIMM_PYTHON, default .venv-timm/bin/python): a Keras CoAtNet saved with
`save_timm_checkpoint` loads in timm with the same outputs; a checkpoint timm wrote loads here from a local Hub
with timm's outputs; `eval_transform` equals timm's eval transform."""

import json
import os
import subprocess

import numpy as np
import pytest
from conftest import point_hub_client_at
from hub_server import HubServer

import keras_coatnet as kc
from keras_coatnet import pretrained

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
TIMM_PYTHON = os.environ.get("KERAS_COATNET_TIMM_PYTHON", os.path.join(ROOT, ".venv-timm", "bin", "python"))
TOLERANCE = 1e-5  # max |difference| / max |logit|, float32 in both frameworks


def timm_side(*args, timeout=600):
    if not os.path.isfile(TIMM_PYTHON):
        pytest.fail(f"No timm environment at {TIMM_PYTHON}: run `make test` (it builds .venv-timm) or set "
                    "KERAS_COATNET_TIMM_PYTHON.")
    done = subprocess.run([TIMM_PYTHON, os.path.join(HERE, "timm_side.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


def _rel(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _images(size, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, *size, 3)).astype(np.float32)


def _perturb(model, seed=0):
    """Non-trivial BatchNorm statistics, norms and position tables, so that a layout mistake shows."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        name = v.path
        if name.endswith(("moving_mean", "relative_position_bias_table")) or ("norm" in name and "beta" in name):
            v.assign(rng.normal(0, 0.1, v.shape).astype("float32"))
        elif name.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))


@pytest.mark.parametrize("arch, size", [("coatnet_rmlp_nano_rw_224", (224, 224)), ("coatnet_nano_rw_224", (256, 256))],
                         ids=["rmlp", "table_resized_to_256"])
def test_keras_model_saved_for_timm_gives_the_same_outputs_in_timm(tmp_path, arch, size):
    model = kc.create_model(arch, input_shape=(*size, 3), classes=7, classifier_activation=None)
    _perturb(model)
    labels = [f"kind {i}" for i in range(7)]
    folder = kc.save_timm_checkpoint(model, tmp_path / "timm_folder", label_names=labels)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    assert (config["architecture"], config["num_classes"], config["label_names"]) == (arch, 7, labels)
    assert config["pretrained_cfg"]["input_size"] == [3, *size]
    assert config.get("model_args", {}).get("img_size") == (list(size) if size != (224, 224) else None)
    images = _images(size)
    np.save(tmp_path / "images.npy", images)
    timm_side("load", folder, tmp_path / "images.npy", tmp_path / "logits.npy")
    ours = model.predict(images, verbose=0)
    assert _rel(ours, np.load(tmp_path / "logits.npy")) < TOLERANCE
    back = kc.from_pretrained(folder, classifier_activation=None)  # and back into Keras, from the folder
    assert back.label_names == tuple(labels) and back.input_shape[1:3] == size
    np.testing.assert_allclose(back.predict(images, verbose=0), ours, atol=1e-6)


def test_timm_written_checkpoint_loads_from_the_hub_by_its_id(tmp_path, monkeypatch):
    """The issue's check: from_pretrained('hf://timm/coatnet_rmlp_1_rw_224.sw_in1k') builds without naming
    the architecture, a second call with the server stopped uses the cache; outputs are timm's."""
    repo = tmp_path / "hub" / "timm" / "coatnet_rmlp_1_rw_224.sw_in1k"
    images = _images((224, 224), seed=1)
    np.save(tmp_path / "images.npy", images)
    timm_side("save", "coatnet_rmlp_1_rw_224", repo, tmp_path / "images.npy", tmp_path / "logits.npy")
    theirs = np.load(tmp_path / "logits.npy")
    with HubServer(tmp_path / "hub") as server:
        point_hub_client_at(monkeypatch, server.url)
        model = kc.from_pretrained("hf://timm/coatnet_rmlp_1_rw_224.sw_in1k", classifier_activation=None)
    assert model.name == "coatnet_rmlp_1_rw_224" and model.output_shape == (None, 1000)
    assert _rel(model.predict(images, verbose=0), theirs) < TOLERANCE
    again = kc.from_pretrained("hf://timm/coatnet_rmlp_1_rw_224.sw_in1k", include_top=False, pooling="avg")
    assert again.output_shape == (None, 768)


def test_eval_transform_equals_timms(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (h, w) in enumerate([(300, 400), (500, 333), (256, 256), (120, 90)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    configs = {"coatnet_0": pretrained.WEIGHTS["coatnet_0_rw_224.sw_in1k"].eval,
               "nano": pretrained.WEIGHTS["coatnet_nano_rw_224.sw_in1k"].eval,
               "squash384": pretrained.WEIGHTS["coatnet_rmlp_2_rw_384.sw_in12k_ft_in1k"].eval,
               "bilinear_nonsquare": pretrained.EvalConfig(input_size=(192, 256), crop_pct=0.875,
                                                           interpolation="bilinear")}
    for key, cfg in configs.items():
        with open(tmp_path / f"{key}.json", "w") as f:
            json.dump(cfg.to_timm(), f)
        timm_side("transform", tmp_path / f"{key}.json", folder, tmp_path / f"{key}.npz")
        ref = np.load(tmp_path / f"{key}.npz")
        for name in ref.files:
            ours = kc.eval_transform(folder / name, cfg)
            assert ours.shape == (*cfg.input_size, 3), (key, name)
            normalized = (ours / 255.0 - np.array(cfg.mean)) / np.array(cfg.std)
            assert np.abs(normalized.transpose(2, 0, 1) - ref[name]).max() < 1e-5, (key, name)
