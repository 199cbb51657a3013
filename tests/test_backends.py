"""Backend-neutral names and files: no dots in layer/variable names (Keras' torch backend refuses them), and a
`.keras` saved on one backend loads on the others."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_coatnet as kc
from keras_coatnet import naming
from keras_coatnet.timm_weights import read_safetensors, variable_map

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
TIMM_FIXTURES = sorted(glob.glob(os.path.join(HERE, "fixtures", "timm*", "*", "config.json")))
BACKENDS = ("tensorflow", "jax", "torch")
TOLERANCE = 1e-5


def _config(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _max_abs(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@pytest.mark.parametrize("config_path", TIMM_FIXTURES, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_names_have_no_dots_and_map_back_to_timm_keys(config_path):
    folder = os.path.dirname(config_path)
    cfg = _config(folder)
    h, w = cfg.get("load_size", cfg["img_size"])
    model = kc.from_timm_config(cfg["timm_cfg"], input_shape=(h, w, 3), classes=cfg["num_classes"])
    dotted = [v.path for v in model.weights if "." in v.path] + [l.name for l in model.layers if "." in l.name]
    assert not dotted, dotted[:5]
    keys = set(variable_map(model))
    timm_keys = {k for k in read_safetensors(os.path.join(folder, "model.safetensors"))
                 if not k.endswith(("num_batches_tracked", "relative_position_index", "rel_coords_log",
                                    "height_lookup", "width_lookup"))}
    assert keys == timm_keys
    assert all(naming.timm_path(naming.keras_name(k)) == k for k in keys)


def test_naming_is_one_reversible_mapping():
    assert naming.keras_name("stages.2.blocks.0") == "stages__2__blocks__0"
    assert naming.timm_path("head__pre_logits__fc") == "head.pre_logits.fc"
    assert naming.block_index("stages__1__blocks__3") == (1, 3)
    assert naming.block_index("head__fc") is None


LOAD_AND_PREDICT = """
import sys, numpy as np, keras, keras_coatnet as kc
model = kc.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(x, training=False)))
"""


@pytest.mark.parametrize("other", BACKENDS)
def test_keras_file_saved_here_loads_on_another_backend(other, tmp_path, tiny_model):
    here = keras.backend.backend()
    if other == here:
        pytest.skip("same backend")
    if importlib.util.find_spec("torch" if other == "torch" else other) is None:
        pytest.skip(f"{other} is not installed (pip install -e '.[{other}]')")
    model = tiny_model
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    path, x_path, out_path = tmp_path / f"saved_on_{here}.keras", tmp_path / "x.npy", tmp_path / "out.npy"
    model.save(path)
    np.save(x_path, x)
    env = {**os.environ, "KERAS_BACKEND": other, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(path), str(x_path), str(out_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _max_abs(np.load(out_path), _predict(model, x)) <= TOLERANCE
