"""Published weights: the table of known checkpoints, head and resolution changes on load, and decoding. A tiny
timm fixture on a local Hub stands in for a published checkpoint (the client itself: test_hub.py)."""

import json
import logging
import os

import numpy as np
import pytest
from conftest import point_hub_client_at
from hub_server import HubServer
from test_hub import publish

import keras_coatnet as kc
from keras_coatnet import pretrained, variants

HERE = os.path.dirname(__file__)
FIXTURE = os.path.join(HERE, "fixtures", "timm", "tiny_coatnet_0_rw")
RESIZED = os.path.join(HERE, "fixtures", "timm_extra", "tiny_coatnet_0_rw_resized")
NAME, TAG = "tiny_coatnet_0_rw", "sw_in1k"
TOLERANCE = 1e-4

# The tags the issue lists; weights="imagenet" must pick the first in1k-head tag of each model.
PUBLISHED = """coatnet_nano_rw_224.sw_in1k coatnet_0_rw_224.sw_in1k coatnet_1_rw_224.sw_in1k
coatnet_2_rw_224.sw_in12k_ft_in1k coatnet_2_rw_224.sw_in12k coatnet_3_rw_224.sw_in12k coatnet_bn_0_rw_224.sw_in1k
coatnet_rmlp_nano_rw_224.sw_in1k coatnet_rmlp_1_rw_224.sw_in1k coatnet_rmlp_1_rw2_224.sw_in12k_ft_in1k
coatnet_rmlp_1_rw2_224.sw_in12k coatnet_rmlp_2_rw_224.sw_in1k coatnet_rmlp_2_rw_224.sw_in12k_ft_in1k
coatnet_rmlp_2_rw_224.sw_in12k coatnet_rmlp_2_rw_384.sw_in12k_ft_in1k""".split()
IMAGENET_DEFAULT = {"coatnet_nano_rw_224": "sw_in1k", "coatnet_0_rw_224": "sw_in1k", "coatnet_1_rw_224": "sw_in1k",
                    "coatnet_2_rw_224": "sw_in12k_ft_in1k", "coatnet_bn_0_rw_224": "sw_in1k",
                    "coatnet_rmlp_nano_rw_224": "sw_in1k", "coatnet_rmlp_1_rw_224": "sw_in1k",
                    "coatnet_rmlp_1_rw2_224": "sw_in12k_ft_in1k", "coatnet_rmlp_2_rw_224": "sw_in1k",
                    "coatnet_rmlp_2_rw_384": "sw_in12k_ft_in1k"}


def _meta(folder=FIXTURE):
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)


def _max_rel_error(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The tiny checkpoint as tag TAG of model NAME (registered), on a local Hub the client points at."""
    model = kc.from_timm_config(_meta()["timm_cfg"], input_shape=(64, 64, 3), classes=10)
    digest = pretrained.manifest_digest(pretrained.model_manifest(model))
    monkeypatch.setitem(variants.MODELS, NAME, {"config": _meta()["timm_cfg"], "input_size": (64, 64),
                                                "family": "timm"})
    monkeypatch.setitem(pretrained.WEIGHTS, f"{NAME}.{TAG}", pretrained.Weights(NAME, TAG, 10, 0, digest))
    publish(tmp_path / "hub", f"timm/{NAME}.{TAG}")
    with HubServer(tmp_path / "hub") as server:
        point_hub_client_at(monkeypatch, server.url)
        server.root = tmp_path / "hub"
        yield server


def _stage_outputs(model, images):
    return kc.feature_model(model).predict(images, verbose=0)


# --- registry ------------------------------------------------------------------------------------------------


def test_registry_lists_every_published_tag():
    assert pretrained.list_weights() == sorted(PUBLISHED)
    for name, w in pretrained.WEIGHTS.items():
        model_entry = variants.get_entry(w.model)
        assert w.input_size == model_entry["input_size"], name
        assert (w.mean, w.std) == (pretrained.default_eval(w.model).mean, pretrained.default_eval(w.model).std)
        assert w.classes == (11821 if w.tag.endswith("in12k") else 1000), name
        assert w.hub_ref == f"hf://timm/{name}"
        assert (w.top1 is None) == (w.classes != 1000), name
        assert w.eval.interpolation == "bicubic"
    assert [n for n, w in pretrained.WEIGHTS.items() if w.crop_pct == 0.9] == [
        "coatnet_nano_rw_224.sw_in1k", "coatnet_rmlp_nano_rw_224.sw_in1k"]
    w384 = pretrained.WEIGHTS["coatnet_rmlp_2_rw_384.sw_in12k_ft_in1k"]
    assert (w384.crop_pct, w384.crop_mode, w384.input_size) == (1.0, "squash", (384, 384))
    assert pretrained.WEIGHTS["coatnet_bn_0_rw_224.sw_in1k"].mean == (0.485, 0.456, 0.406)


def test_imagenet_and_tag_resolution():
    for model, tag in IMAGENET_DEFAULT.items():
        assert pretrained.get_weights(model, "imagenet").tag == tag
    assert pretrained.get_weights("coatnet_2_rw_224", "sw_in12k").classes == 11821
    assert pretrained.get_weights("coatnet_2_rw_224", "coatnet_2_rw_224.sw_in12k").tag == "sw_in12k"
    with pytest.raises(ValueError, match=r"no ImageNet-1k weights.*sw_in12k.*classes=11821"):
        pretrained.get_weights("coatnet_3_rw_224", "imagenet")
    with pytest.raises(ValueError, match=r"Unknown weights 'sw_in22k'.*\['sw_in12k', 'sw_in12k_ft_in1k'\]"):
        pretrained.get_weights("coatnet_2_rw_224", "sw_in22k")


def test_readme_table_matches_registry():
    """Each row of the README table: model, tag, classes, resolution, crop, params (M) and top-1 as registered."""
    with open(os.path.join(os.path.dirname(os.path.dirname(pretrained.__file__)), "README.md")) as f:
        section = f.read().split("## Pretrained weights", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    table = {f"{r[0].strip('`')}.{r[1].split('`')[1].strip(chr(34))}": r for r in rows}
    assert sorted(table) == sorted(PUBLISHED)
    for name, (_, tag, _, classes, size, crop, params, top1) in table.items():
        w = pretrained.WEIGHTS[name]
        assert ('"imagenet"' in tag) == (w.classes == 1000 and pretrained.get_weights(w.model).tag == w.tag), name
        assert (int(classes), int(size), float(params)) == (w.classes, w.input_size[0], round(w.params / 1e6, 2))
        assert crop == ("squash" if w.crop_mode == "squash" else str(w.crop_pct)), name
        assert top1 == ("—" if w.top1 is None else f"{w.top1:.2f}"), name


def test_eval_resize_sizes():
    assert pretrained.WEIGHTS["coatnet_0_rw_224.sw_in1k"].eval.resize_size == (235, 235)
    assert pretrained.WEIGHTS["coatnet_nano_rw_224.sw_in1k"].eval.resize_size == (248, 248)
    assert pretrained.WEIGHTS["coatnet_rmlp_2_rw_384.sw_in12k_ft_in1k"].eval.resize_size == (384, 384)


def test_weights_name_needs_a_registered_model():
    with pytest.raises(ValueError, match="need a registered model name"):
        kc.from_timm_config(_meta()["timm_cfg"], weights="imagenet")


@pytest.mark.parametrize("call", [lambda: kc.CoAtNet0(weights="imagenet"),
                                  lambda: kc.create_model("coatnet_0_224", weights="imagenet"),
                                  lambda: kc.create_model("coatnet_pico_rw_224", weights="imagenet")])
def test_models_without_weights_list_the_ones_with(call):
    with pytest.raises(ValueError, match=r"No published weights for .*coatnet_0_rw_224, .*coatnet_rmlp_2_rw_384"):
        call()


# --- head and resolution changes -------------------------------------------------------------------------------


def test_include_top_false_loads_the_backbone(served):
    model = kc.create_model(NAME, weights=TAG, include_top=False, include_preprocessing=False)
    ref = np.load(os.path.join(FIXTURE, "io.npz"))
    assert model.output_shape == (None, None, None, 96)  # keras.applications: no top, no shape -> any size
    assert not [layer.name for layer in model.layers if layer.name.startswith("head")]
    stages = _stage_outputs(model, ref["images_nhwc"])
    for i, feat in enumerate(stages):
        assert _max_rel_error(feat, ref[f"stage{i}_nhwc"]) < TOLERANCE, i


def test_other_class_count_keeps_backbone_and_new_head(served, caplog):
    with caplog.at_level(logging.INFO, logger="keras_coatnet"):
        model = kc.create_model(NAME, weights=TAG, classes=5, include_preprocessing=False,
                                classifier_activation=None)
    assert "10-class head; keeping a new 5-class classifier" in caplog.text
    assert "pass classes=10 to keep it" in caplog.text
    assert tuple(model.get_layer("head__fc").kernel.shape) == (96, 5)
    ref = np.load(os.path.join(FIXTURE, "io.npz"))
    assert model.predict(ref["images_nhwc"], verbose=0).shape == (2, 5)
    assert _max_rel_error(_stage_outputs(model, ref["images_nhwc"])[3], ref["stage3_nhwc"]) < TOLERANCE


def test_other_resolution_resizes_position_tables(served, caplog):
    """A checkpoint made at 64x64 loaded at 96x128; against timm's outputs for that load when the fixture
    timm_extra/tiny_coatnet_0_rw_resized (same architecture, its own weights) is present."""
    timm_ref = os.path.isdir(RESIZED)
    publish(served.root, f"timm/{NAME}.{TAG}", weights=os.path.join(RESIZED if timm_ref else FIXTURE,
                                                                    "model.safetensors"))
    with caplog.at_level(logging.INFO, logger="keras_coatnet"):
        model = kc.create_model(NAME, weights=TAG, classes=10, input_shape=(96, 128, 3),
                                include_preprocessing=False, classifier_activation=None)
    # stage 2 runs on a 4x4 map at 64x64 and a 6x8 map at 96x128: (2*4-1)^2 = 49 -> (2*6-1)(2*8-1) = 165 offsets
    assert "stages.2.blocks.1.attn.rel_pos.relative_position_bias_table from (49, 2) to (165, 2)" in caplog.text
    assert "stages.3.blocks.0.attn.rel_pos.relative_position_bias_table from (9, 2) to (35, 2)" in caplog.text
    if timm_ref:
        assert _meta(RESIZED)["load_size"] == [96, 128]
        ref = np.load(os.path.join(RESIZED, "io.npz"))
        images = ref["images_nhwc"]
    else:
        images = np.random.default_rng(0).normal(size=(2, 96, 128, 3)).astype("float32")
    logits = model.predict(images, verbose=0)
    assert logits.shape == (2, 10) and np.isfinite(logits).all() and logits.std() > 0
    if timm_ref:
        assert _max_rel_error(logits, ref["logits"]) < TOLERANCE


# --- decoding --------------------------------------------------------------------------------------------------


def test_decode_predictions_offline():
    preds = np.zeros((2, 1000), "float32")
    preds[0, 207], preds[0, 0], preds[1, 1] = 0.9, 0.1, 1.0
    top = kc.decode_predictions(preds, top=2)
    assert top[0] == [("n02099601", "golden retriever", pytest.approx(0.9)), ("n01440764", "tench, Tinca tinca",
                                                                            pytest.approx(0.1))]
    assert top[1][0][:2] == ("n01443537", "goldfish, Carassius auratus")
    assert len(kc.decode_predictions(np.ones((1, 11821)), top=3)[0]) == 3


def test_decode_predictions_without_labels():
    with pytest.raises(ValueError, match=r"No class labels for a 10-class head.*\[1000, 11821\]"):
        kc.decode_predictions(np.ones((1, 10)))
