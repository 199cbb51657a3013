"""The export view computes the Keras model's function with an int8-friendlier graph."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import keras_coatnet
from export import view
from keras_coatnet.builder import build_model

FIXTURES = Path(__file__).parent / "fixtures" / "timm"


def _randomize_stats(model, seed=0):
    """Non-trivial BatchNorm statistics, norm affines and relative-position tables, so folding is tested."""
    rng = np.random.RandomState(seed)
    for v in model.weights:
        name = v.path
        if "moving_variance" in name:
            v.assign(rng.uniform(0.5, 2.0, v.shape))
        elif "moving_mean" in name:
            v.assign(rng.normal(0, 0.2, v.shape))
        elif name.endswith("gamma") or name.endswith("beta"):
            v.assign(rng.normal(1.0 if name.endswith("gamma") else 0.0, 0.2, v.shape))
        elif "relative_position_bias_table" in name:
            v.assign(rng.normal(0, 0.5, v.shape))


def _tiny(name):
    """A small model: coatnet_micro, or a shrunken timm config from tests/fixtures/timm/<name>."""
    if name == "coatnet_micro":
        return keras_coatnet.create_model(name, input_shape=(64, 64, 3), classes=10, classifier_activation=None)
    cfg = json.loads((FIXTURES / name / "config.json").read_text())["timm_cfg"]
    return build_model(cfg, input_shape=(64, 64, 3), classes=10, classifier_activation=None)


# paper blocks; pre-norm act + early SE + no shortcut bias; BatchNorm transformer; pool stride + MLP bias
@pytest.mark.parametrize("name,attention", [
    ("coatnet_micro", "batched"), ("coatnet_micro", "per_head"), ("tiny_coatnet_0_rw", "batched"),
    ("tiny_coatnet_bn_0_rw", "batched"), ("tiny_coatnet_rmlp_nano_rw", "batched")])
def test_view_matches_keras(name, attention):
    model = _tiny(name)
    _randomize_stats(model)
    x = np.random.RandomState(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    want = model(x, training=False).numpy()
    got = tf.function(view.forward(model, view.Options(attention=attention)))(tf.constant(x)).numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_view_rebuilds_every_block_and_keeps_no_runtime_gather():
    model = keras_coatnet.create_model("coatnet_micro", input_shape=(64, 64, 3), classes=10)
    blocks = [l.name for l in model.layers if l.name.startswith("stages.")]
    assert set(blocks) <= set(view.known_layers(model)) and "stem" in view.known_layers(model)
    attn = model.get_layer(blocks[-1]).attn
    bias = view.relative_bias(attn)
    assert bias.shape == (attn.num_heads, 4, 4)  # 64 / 32 = 2x2 tokens -> [heads, 4, 4]


def test_approximate_gelu_changes_the_function_a_little():
    model = keras_coatnet.create_model("coatnet_micro", input_shape=(32, 32, 3), classes=10,
                                       classifier_activation=None)
    x = np.random.RandomState(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    want = model(x, training=False).numpy()
    got = tf.function(view.forward(model, view.Options(gelu="tanh")))(tf.constant(x)).numpy()
    err = np.abs(got - want).max() / np.abs(want).max()
    assert 0 < err < 1e-2
    with pytest.raises(ValueError, match="gelu"):
        view.Options(gelu="fast")
