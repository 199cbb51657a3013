"""Checkpoints through the Hugging Face client against a local Hub (tests/hub_server.py): hf:// sources, the Hub
cache with the server gone, offline mode, interrupted and corrupt transfers, private repos, other architectures,
published tags, label names. A tiny timm fixture, registered as a timm architecture, stands in for a checkpoint."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import point_hub_client_at
from hub_server import COMMIT, HubServer
from huggingface_hub import constants

import keras_coatnet as kc
from keras_coatnet import hub, pretrained, variants

HERE = os.path.dirname(__file__)
FIXTURE = os.path.join(HERE, "fixtures", "timm", "tiny_coatnet_0_rw")
OTHER = os.path.join(HERE, "fixtures", "timm", "tiny_coatnet_nano_rw")
ARCH, REPO = "tiny_coatnet_0_rw", "timm/tiny_coatnet_0_rw.sw_in1k"
LABELS = [f"class {i}" for i in range(10)]
TOLERANCE = 1e-4


def _meta(folder=FIXTURE):
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)


def _max_rel_error(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def publish(root, repo_id, weights=os.path.join(FIXTURE, "model.safetensors"), architecture=ARCH, data=None,
            token=None, **config):
    """Writes a timm repo folder <root>/<repo_id>: config.json (+ `config`) and model.safetensors."""
    folder = os.path.join(root, repo_id)
    os.makedirs(folder, exist_ok=True)
    cfg = {"architecture": architecture, "num_classes": 10, "label_names": LABELS,
           "pretrained_cfg": {"input_size": [3, 64, 64], "crop_pct": 0.9, "interpolation": "bicubic",
                              "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, **config}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    target = os.path.join(folder, "model.safetensors")
    if data is not None:
        with open(target, "wb") as f:
            f.write(data)
    else:
        shutil.copyfile(weights, target)
    if token:
        with open(os.path.join(folder, ".token"), "w") as f:
            f.write(token)
    return folder


@pytest.fixture
def tiny(monkeypatch):
    """The tiny fixture's architecture registered as timm architecture ARCH."""
    monkeypatch.setitem(variants.MODELS, ARCH, {"config": _meta()["timm_cfg"], "input_size": (64, 64),
                                                "family": "timm"})


@pytest.fixture
def local_hub(tmp_path, monkeypatch, tiny):
    """A running local Hub holding REPO, with the client pointed at it."""
    root = tmp_path / "hub"
    publish(root, REPO)
    with HubServer(root) as server:
        point_hub_client_at(monkeypatch, server.url)
        server.root = root
        yield server


def snapshot_files(repo_id=REPO):
    folder = os.path.join(constants.HF_HUB_CACHE, f"models--{repo_id.replace('/', '--')}")
    if not os.path.isdir(folder):
        return [], []
    snaps = sorted(f for _, _, files in os.walk(os.path.join(folder, "snapshots")) for f in files)
    blobs = sorted(os.listdir(os.path.join(folder, "blobs"))) if os.path.isdir(os.path.join(folder, "blobs")) else []
    return snaps, blobs


def _logits(model):
    ref = np.load(os.path.join(FIXTURE, "io.npz"))
    return model.predict(ref["images_nhwc"], verbose=0), ref["logits"]


def test_from_pretrained_builds_from_config_then_uses_the_cache_offline(local_hub):
    model = kc.from_pretrained(f"hf://{REPO}", include_preprocessing=False, classifier_activation=None)
    assert model.name == ARCH and model.input_shape == (None, 64, 64, 3) and model.output_shape == (None, 10)
    ours, ref = _logits(model)
    assert _max_rel_error(ours, ref) < TOLERANCE
    assert model.label_names == tuple(LABELS)
    assert (model.eval_config.crop_pct, model.eval_config.input_size) == (0.9, (64, 64))
    assert snapshot_files() == (["config.json", "model.safetensors"], sorted(os.listdir(os.path.join(
        constants.HF_HUB_CACHE, f"models--{REPO.replace('/', '--')}", "blobs"))))
    gets = [p for m, p in local_hub.requests if m == "GET"]
    assert f"/{REPO}/resolve/main/config.json" in gets and any(p.startswith("/cdn/") for p in gets)
    local_hub.stop()  # the second call finds both files in the Hub cache
    again = kc.from_pretrained(f"hf://{REPO}", include_preprocessing=False, classifier_activation=None)
    np.testing.assert_array_equal(_logits(again)[0], ours)


def test_offline_mode_uses_the_cache_and_says_what_is_missing(local_hub, monkeypatch):
    kc.from_pretrained(f"hf://{REPO}")
    count = len(local_hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert kc.from_pretrained(f"hf://{REPO}").output_shape == (None, 10)
    assert len(local_hub.requests) == count  # offline: not one request
    publish(local_hub.root, "timm/other")
    with pytest.raises(hub.HubError) as err:
        kc.from_pretrained("hf://timm/other")
    assert str(err.value) == (f"hf://timm/other: config.json is not in the Hub cache ({constants.HF_HUB_CACHE}) "
                              f"and {local_hub.url} cannot be reached (HF_HUB_OFFLINE is set)")


def test_revision_is_pinned(local_hub):
    assert kc.from_pretrained(f"hf://{REPO}@{COMMIT}").output_shape == (None, 10)
    with pytest.raises(hub.HubError, match=rf"^hf://{REPO}@v2: revision not found$"):
        kc.from_pretrained(f"hf://{REPO}@v2")


def test_interrupted_transfer_resumes_or_leaves_nothing_under_the_final_name(local_hub):
    local_hub.cut["model.safetensors"] = 1  # one cut: the client resumes with a Range request
    assert kc.from_pretrained(f"hf://{REPO}").output_shape == (None, 10)
    assert any(m == "GET" and p.startswith("/cdn/") for m, p in local_hub.requests)
    publish(local_hub.root, "timm/flaky")
    local_hub.cut["model.safetensors"] = 100  # every try cut
    with pytest.raises(hub.HubError, match=r"^hf://timm/flaky: "):
        kc.from_pretrained("hf://timm/flaky")
    snaps, blobs = snapshot_files("timm/flaky")
    assert snaps == ["config.json"] and all(b.endswith(".incomplete") or len(b) == 40 for b in blobs)


def test_corrupt_file_is_refused_and_removed_from_the_cache(local_hub):
    with open(os.path.join(FIXTURE, "model.safetensors"), "rb") as f:
        data = f.read()
    publish(local_hub.root, "timm/cut", data=data[: len(data) // 2])
    with pytest.raises(ValueError) as err:
        kc.from_pretrained("hf://timm/cut")
    assert str(err.value).startswith("hf://timm/cut/model.safetensors is truncated or corrupt (not a readable ")
    assert str(err.value).endswith("It was removed from the Hub cache.") and "\n" not in str(err.value)
    snaps, blobs = snapshot_files("timm/cut")
    assert snaps == ["config.json"] and len(blobs) == 1  # config.json's blob only
    assert sum(1 for m, p in local_hub.requests if m == "GET" and p.startswith("/cdn/")) == 2  # fetched afresh once


def test_other_architectures_are_refused_in_one_line(local_hub, monkeypatch):
    publish(local_hub.root, "timm/vit", architecture="vit_base_patch16_224")
    with pytest.raises(ValueError, match=r"^hf://timm/vit: architecture 'vit_base_patch16_224' is not a CoAtNet "
                                         r"keras_coatnet builds \(coatnet_0_224, .*coatnet_rmlp_2_rw_384, .*\)\.$"):
        kc.from_pretrained("hf://timm/vit")
    with pytest.raises(ValueError, match=rf"^hf://{REPO} holds a '{ARCH}', not a 'coatnet_nano_rw_224'; use "):
        kc.create_model("coatnet_nano_rw_224", weights=f"hf://{REPO}")
    other = _meta(OTHER)  # a checkpoint of another network under our architecture's name: refused, names tensors
    publish(local_hub.root, "timm/mislabelled", weights=os.path.join(OTHER, "model.safetensors"))
    assert other["like"] != _meta()["like"]
    with pytest.raises(ValueError, match=r"^Weights in .* do not match this architecture: \d+ tensors missing"):
        kc.from_pretrained("hf://timm/mislabelled")
    publish(local_hub.root, "timm/args", model_args={"window_size": 8, "drop_rate": 0.1})
    with pytest.raises(ValueError, match=r"^hf://timm/args: model_args \['window_size'\] are not supported"):
        kc.from_pretrained("hf://timm/args")
    publish(local_hub.root, "timm/maxpool", global_pool="max")
    with pytest.raises(ValueError, match=r"^hf://timm/maxpool: global_pool 'max' is not supported"):
        kc.from_pretrained("hf://timm/maxpool")


def test_missing_repo_file_and_private_repo(local_hub):
    with pytest.raises(hub.HubError, match=r"^hf://timm/none: repository not found \(or private: set HF_TOKEN"):
        kc.from_pretrained("hf://timm/none")
    os.remove(os.path.join(local_hub.root, REPO, "model.safetensors"))
    with pytest.raises(hub.HubError, match=rf"^hf://{REPO}: the repo has no model.safetensors$"):
        kc.from_pretrained(f"hf://{REPO}")
    publish(local_hub.root, "me/private", token="hf_secret")
    with pytest.raises(hub.HubError, match=r"^hf://me/private: repository not found \(or private"):
        kc.from_pretrained("hf://me/private")
    assert kc.from_pretrained("hf://me/private", token="hf_secret").output_shape == (None, 10)
    for bad in ("hf://timm", "hf://a/b/c", "hf:///x"):
        with pytest.raises(ValueError, match="is not a Hub reference; expected hf://owner/repo"):
            kc.from_pretrained(bad)


def test_published_tags_go_through_the_hub_and_their_manifest(local_hub, monkeypatch):
    """weights='imagenet' / a tag: the repo timm/<model>.<tag>, checked against the recorded manifest."""
    model = kc.from_timm_config(_meta()["timm_cfg"], input_shape=(64, 64, 3), classes=10)
    digest = pretrained.manifest_digest(pretrained.model_manifest(model))
    monkeypatch.setitem(pretrained.WEIGHTS, f"{ARCH}.sw_in1k", pretrained.Weights(ARCH, "sw_in1k", 10, 0, digest))
    model = kc.create_model(ARCH, weights="imagenet", include_preprocessing=False, classifier_activation=None)
    assert _max_rel_error(*_logits(model)) < TOLERANCE
    publish(local_hub.root, REPO, weights=os.path.join(OTHER, "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(local_hub.root / "fresh_cache"))
    with pytest.raises(ValueError, match=rf"^hf://{REPO}/model.safetensors does not hold {ARCH}.sw_in1k: its "):
        kc.create_model(ARCH, weights="sw_in1k")


def test_every_published_tag_names_its_timm_repo(local_hub):
    for name in pretrained.list_weights():
        model, tag = name.split(".")
        with pytest.raises(hub.HubError, match=rf"^hf://timm/{name}: repository not found"):
            kc.create_model(model, weights=tag)
        assert local_hub.requests[-1] == ("HEAD", f"/timm/{name}/resolve/main/config.json")


def test_local_folder_and_label_names_in_decode_predictions(tmp_path, tiny):
    folder = publish(tmp_path, "me/folder")
    model = kc.from_pretrained(folder, include_preprocessing=False)
    preds = np.zeros((1, 10), "float32")
    preds[0, 3] = 1.0
    assert kc.decode_predictions(preds, top=1, label_names=model.label_names) == [[("3", "class 3", 1.0)]]
    with pytest.raises(ValueError, match="3 label_names for 10 classes"):
        kc.decode_predictions(preds, label_names=["a", "b", "c"])


def test_environment_variables_reach_the_client_and_the_converter(tmp_path, tiny):
    """A fresh process: HF_ENDPOINT and HF_HOME from the environment; `convert hf://... out.keras`."""
    root = tmp_path / "hub"
    publish(root, REPO)
    out = tmp_path / "tiny.keras"
    script = (f"import sys, json; sys.path.insert(0, {HERE!r}); from keras_coatnet import variants, convert; "
              f"meta = json.load(open({os.path.join(FIXTURE, 'config.json')!r})); "
              f"variants.MODELS[{ARCH!r}] = dict(config=meta['timm_cfg'], input_size=(64, 64), family='timm'); "
              f"sys.exit(convert.main(['hf://{REPO}', {str(out)!r}, '--quiet']))")
    with HubServer(root) as server:
        env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf_home"),
               "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Converted" in done.stdout and out.is_file()
    assert os.path.isdir(tmp_path / "hf_home" / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots")
    import keras

    _, ref = _logits(kc.from_pretrained(publish(tmp_path, "x/y"), include_preprocessing=False,
                                        classifier_activation=None))
    loaded = keras.models.load_model(out)
    ours = loaded.predict(np.load(os.path.join(FIXTURE, "io.npz"))["images_nhwc"] * 127.5 + 127.5, verbose=0)
    assert ours.shape == (2, 10)


def test_export_takes_a_timm_folder_and_writes_its_label_names(tmp_path, tiny):
    from export.api import export_model

    folder = publish(tmp_path, "me/labelled")
    export_model(folder, tmp_path / "out", formats=["fp32"], progress=None)
    assert (tmp_path / "out" / "labels.txt").read_text().splitlines() == LABELS


def test_from_timm_config_normalizes_as_the_checkpoint_says(tmp_path, tiny):
    folder = publish(tmp_path, "me/imagenet_norm", pretrained_cfg={"input_size": [3, 64, 64],
                                                                    "mean": [0.485, 0.456, 0.406],
                                                                    "std": [0.229, 0.224, 0.225]})
    model = kc.from_timm_config(_meta()["timm_cfg"], input_shape=(64, 64, 3), classes=10, weights=folder,
                                include_preprocessing=True)
    assert model.get_layer("preprocessing").mean == (0.485, 0.456, 0.406)
    plain = kc.from_timm_config(_meta()["timm_cfg"], input_shape=(64, 64, 3), classes=10,
                                include_preprocessing=True)
    assert plain.get_layer("preprocessing").mean == (0.5, 0.5, 0.5)
