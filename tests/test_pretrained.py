"""Published weights: registry, download/cache/verify through file:// and a local HTTP server, head and
resolution changes, and decoding. A tiny timm fixture stands in for a published checkpoint."""

import dataclasses
import hashlib
import http.server
import json
import logging
import os
import shutil
import socket
import threading
import types

import numpy as np
import pytest

import keras_coatnet as kc
from keras_coatnet import pretrained, registry
from keras_coatnet.builder import TIMM_MEAN, TIMM_STD
from keras_coatnet.download import DownloadError

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


@pytest.fixture(scope="module")
def tiny_digest():
    """Manifest digest of the tiny fixture architecture, from our Keras model (not from the file)."""
    meta = _meta()
    model = kc.from_timm_config(meta["timm_cfg"], input_shape=(64, 64, 3), classes=10)
    return pretrained.manifest_digest(pretrained.model_manifest(model))


@pytest.fixture
def tiny(monkeypatch, tmp_path, tiny_digest):
    """Registers the tiny fixture as model NAME with one published tag; cache under a temporary KERAS_HOME."""
    monkeypatch.setitem(registry.MODELS, NAME, {"config": _meta()["timm_cfg"], "input_size": (64, 64),
                                                "mean": TIMM_MEAN, "std": TIMM_STD, "family": "test"})
    entry = pretrained.Weights(NAME, TAG, classes=10, params=0, manifest_sha256=tiny_digest, input_size=(64, 64))
    monkeypatch.setitem(pretrained.WEIGHTS, entry.name, entry)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    for var in (pretrained.URL_ENV, pretrained.DIR_ENV):
        monkeypatch.delenv(var, raising=False)
    return entry


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves `server.root`; records request paths; `server.cut[path] = n` sends only n bytes of that file
    while announcing its full length (a connection lost mid-transfer); `server.redirect[path] = url` answers 302."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(args[2].state.root), **kwargs)  # args: request, address, server

    def do_GET(self):
        state = self.server.state
        state.requests.append(self.path)
        if self.path in state.redirect:  # as Hugging Face's resolve/ URLs do, to their file store
            self.send_response(302)
            self.send_header("Location", state.redirect[self.path])
            self.send_header("Content-Length", "0")
            return self.end_headers()
        if self.path not in state.cut:
            return super().do_GET()
        with open(os.path.join(state.root, self.path.lstrip("/")), "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:state.cut[self.path]])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 in a thread: `.url`, `.root` (served folder), `.requests`, `.cut`, `.redirect`."""
    state = types.SimpleNamespace(root=tmp_path / "www", requests=[], cut={}, redirect={})
    state.root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state, httpd.timeout = state, 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_port}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def served(tiny, server, monkeypatch):
    """The tiny checkpoint published on the local server, which `$KERAS_COATNET_WEIGHTS_URL` points at."""
    publish(server.root, tiny)
    monkeypatch.setenv(pretrained.URL_ENV, server.url)
    return server


def publish(root, entry, source=os.path.join(FIXTURE, "model.safetensors"), data=None):
    """Places a checkpoint where `entry.url(<root's URL>)` points; returns the URL path."""
    rel = f"{entry.name}/resolve/main/model.safetensors"
    os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
    if data is None:
        shutil.copyfile(source, os.path.join(root, rel))
    else:
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
    return "/" + rel


def cache_files():
    folder = pretrained.cache_dir()
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _stage_outputs(model, images):
    return kc.feature_model(model).predict(images, verbose=0)


# --- registry ------------------------------------------------------------------------------------------------


def test_registry_lists_every_published_tag():
    assert pretrained.list_weights() == sorted(PUBLISHED)
    for name, w in pretrained.WEIGHTS.items():
        model_entry = registry.get_entry(w.model)
        assert w.input_size == model_entry["input_size"], name
        assert (w.mean, w.std) == (model_entry["mean"], model_entry["std"]), name
        assert w.classes == (11821 if w.tag.endswith("in12k") else 1000), name
        assert w.url() == f"https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
        assert (w.top1 is None) == (w.classes != 1000), name
        assert w.interpolation == "bicubic"
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
    assert pretrained.WEIGHTS["coatnet_0_rw_224.sw_in1k"].resize_size == (235, 235)
    assert pretrained.WEIGHTS["coatnet_nano_rw_224.sw_in1k"].resize_size == (248, 248)
    assert pretrained.WEIGHTS["coatnet_rmlp_2_rw_384.sw_in12k_ft_in1k"].resize_size == (384, 384)


def test_weights_name_needs_a_registered_model():
    with pytest.raises(ValueError, match="need a registered model name"):
        kc.from_timm_config(_meta()["timm_cfg"], weights="imagenet")


@pytest.mark.parametrize("call", [lambda: kc.CoAtNet0(weights="imagenet"),
                                  lambda: kc.create_model("coatnet_0_224", weights="imagenet"),
                                  lambda: kc.create_model("coatnet_pico_rw_224", weights="imagenet")])
def test_models_without_weights_list_the_ones_with(call):
    with pytest.raises(ValueError, match=r"No published weights for .*coatnet_0_rw_224, .*coatnet_rmlp_2_rw_384"):
        call()


def test_every_tag_resolves_to_its_download(tmp_path, monkeypatch, server):
    """create_model(name, weights=tag) reaches the download of <base>/<model>.<tag>/resolve/main/model.safetensors
    (nothing is served, so it stops there with the URL and how to place the file by hand)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(pretrained.URL_ENV, server.url)
    monkeypatch.delenv(pretrained.DIR_ENV, raising=False)
    for name in PUBLISHED:
        model, tag = name.split(".")
        with pytest.raises(DownloadError) as err:
            kc.create_model(model, weights=tag)
        url = f"{server.url}/{name}/resolve/main/model.safetensors"
        assert url in str(err.value)
        assert os.path.join(pretrained.cache_dir(), f"{name}.safetensors") in str(err.value)
        assert pretrained.DIR_ENV in str(err.value)
        assert server.requests[-1] == f"/{name}/resolve/main/model.safetensors"
    assert len(server.requests) == len(PUBLISHED)
    assert cache_files() == []


# --- download, cache, verification ---------------------------------------------------------------------------


def test_download_cache_and_timm_logits(tiny, server, monkeypatch):
    path = publish(server.root, tiny)
    monkeypatch.setenv(pretrained.URL_ENV, server.url)
    model = kc.create_model(NAME, weights="imagenet", include_preprocessing=False, classifier_activation=None)
    assert model.output_shape == (None, 10)  # classes defaults to the checkpoint's
    ref = np.load(os.path.join(FIXTURE, "io.npz"))
    logits = model.predict(ref["images_nhwc"], verbose=0)
    assert _max_rel_error(logits, ref["logits"]) < TOLERANCE
    assert server.requests == [path]
    assert cache_files() == [f"{NAME}.{TAG}.safetensors"]
    cached = os.path.join(pretrained.cache_dir(), f"{NAME}.{TAG}.safetensors")
    assert os.stat(cached).st_mode & 0o777 == 0o644
    assert pretrained.fetch(NAME, "imagenet") == cached  # served from the cache: no second request
    assert server.requests == [path]
    assert tiny.url() == server.url + path


def test_file_url_download(tiny, tmp_path):
    root = tmp_path / "mirror"
    publish(root, tiny)
    path = pretrained.fetch(NAME, TAG, base_url=f"file://{root}")
    assert path == os.path.join(pretrained.cache_dir(), f"{NAME}.{TAG}.safetensors")
    with open(path, "rb") as a, open(os.path.join(FIXTURE, "model.safetensors"), "rb") as b:
        assert a.read() == b.read()


def _safetensors_bytes(header, data):
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def test_read_header_checks_sizes(tmp_path):
    from safetensors import safe_open

    path = os.path.join(FIXTURE, "model.safetensors")
    with safe_open(path, "np") as f:
        expected = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert pretrained.read_header(path) == expected and len(expected) > 100
    cases = {
        "padded.safetensors": (open(path, "rb").read() + b"\0", "but its header describes"),
        "shape.safetensors": (_safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}},
                                                 b"\0" * 4), "byte size does not fit their shape"),
        "list.safetensors": (_safetensors_bytes([1, 2], b""), "not a JSON object"),
        "dtype.safetensors": (_safetensors_bytes({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}},
                                                 b"\0" * 4), "malformed safetensors header"),
        "empty.safetensors": (b"", "not a safetensors file"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=message):
            pretrained.read_header(str(tmp_path / name))


def test_redirect_is_followed(tiny, server):
    path = publish(server.root, tiny)
    os.replace(os.path.join(server.root, path.lstrip("/")), os.path.join(server.root, "blob"))
    server.redirect[path] = f"{server.url}/blob"
    assert os.path.getsize(pretrained.fetch(NAME, TAG, base_url=server.url)) == os.path.getsize(
        os.path.join(FIXTURE, "model.safetensors"))
    assert server.requests == [path, "/blob"]


def test_connection_lost_midway_leaves_nothing(tiny, server):
    path = publish(server.root, tiny)
    server.cut[path] = 1000
    size = os.path.getsize(os.path.join(FIXTURE, "model.safetensors"))
    with pytest.raises(DownloadError, match=rf"ended after 1000 of {size} bytes.*by hand"):
        pretrained.fetch(NAME, TAG, base_url=server.url)
    assert cache_files() == []


def test_truncated_file_is_rejected_and_removed(tiny, server):
    with open(os.path.join(FIXTURE, "model.safetensors"), "rb") as f:
        data = f.read()
    path = publish(server.root, tiny, data=data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"failed verification and was removed.*truncated or corrupt") as err:
        pretrained.fetch(NAME, TAG, base_url=server.url)
    assert f"removed: {server.url}{path} is {len(data) // 2} bytes but its header describes {len(data)}" \
           in str(err.value)
    assert cache_files() == []


def test_checksum_checked_when_known(tiny, server, monkeypatch):
    publish(server.root, tiny)
    with open(os.path.join(FIXTURE, "model.safetensors"), "rb") as f:
        good = hashlib.sha256(f.read()).hexdigest()
    monkeypatch.setitem(pretrained.WEIGHTS, tiny.name, dataclasses.replace(tiny, sha256="0" * 64))
    with pytest.raises(ValueError, match=rf"Checksum mismatch.*SHA-256 {good}, expected 0{{64}}"):
        pretrained.fetch(NAME, TAG, base_url=server.url)
    assert cache_files() == []
    monkeypatch.setitem(pretrained.WEIGHTS, tiny.name, dataclasses.replace(tiny, sha256=good))
    assert os.path.isfile(pretrained.fetch(NAME, TAG, base_url=server.url))


def test_other_architecture_is_rejected(tiny, server):
    publish(server.root, tiny, source=os.path.join(HERE, "fixtures", "timm", "tiny_coatnet_nano_rw",
                                                   "model.safetensors"))
    with pytest.raises(ValueError, match=r"does not hold tiny_coatnet_0_rw.sw_in1k"):
        pretrained.fetch(NAME, TAG, base_url=server.url)
    assert cache_files() == []


def test_offline_error_says_url_and_manual_placement(tiny, monkeypatch):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(pretrained.DIR_ENV, "/opt/weights")
    with pytest.raises(DownloadError) as err:
        pretrained.fetch(NAME, TAG, base_url=f"http://127.0.0.1:{port}")
    text = str(err.value)
    assert f"Could not download http://127.0.0.1:{port}/{NAME}.{TAG}/resolve/main/model.safetensors" in text
    assert f"save it as /opt/weights/{NAME}.{TAG}.safetensors with {pretrained.DIR_ENV}=/opt/weights" in text
    assert cache_files() == []


def test_http_404_is_a_download_error(tiny, server):
    with pytest.raises(DownloadError, match=r"Could not download .*: HTTP 404 File not found. To install it by hand"):
        pretrained.fetch(NAME, TAG, base_url=server.url)


def test_weights_dir_is_checked_first_and_never_deleted(tiny, server, tmp_path, monkeypatch):
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copyfile(os.path.join(FIXTURE, "model.safetensors"), manual / f"{NAME}.{TAG}.safetensors")
    monkeypatch.setenv(pretrained.DIR_ENV, str(manual))
    assert pretrained.fetch(NAME, TAG, base_url=server.url) == str(manual / f"{NAME}.{TAG}.safetensors")
    assert server.requests == [] and cache_files() == []
    (manual / f"{NAME}.{TAG}.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match="not a safetensors file"):
        pretrained.fetch(NAME, TAG, base_url=server.url)
    assert (manual / f"{NAME}.{TAG}.safetensors").exists()


def test_corrupt_cache_is_replaced(tiny, server, caplog):
    path = publish(server.root, tiny)
    os.makedirs(pretrained.cache_dir())
    cached = os.path.join(pretrained.cache_dir(), f"{NAME}.{TAG}.safetensors")
    with open(os.path.join(FIXTURE, "model.safetensors"), "rb") as f:
        data = f.read()
    with open(cached, "wb") as f:
        f.write(data[:-10])
    with caplog.at_level(logging.WARNING, logger="keras_coatnet"):
        assert pretrained.fetch(NAME, TAG, base_url=server.url) == cached
    assert "Removing a bad cached file" in caplog.text
    assert server.requests == [path]
    assert os.path.getsize(cached) == len(data)


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


def test_other_resolution_resizes_position_tables(tiny, server, monkeypatch, caplog):
    """A checkpoint made at 64x64 loaded at 96x128; against timm's outputs for that load when the fixture
    timm_extra/tiny_coatnet_0_rw_resized (same architecture, its own weights) is present."""
    timm_ref = os.path.isdir(RESIZED)
    publish(server.root, tiny, source=os.path.join(RESIZED if timm_ref else FIXTURE, "model.safetensors"))
    monkeypatch.setenv(pretrained.URL_ENV, server.url)
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
