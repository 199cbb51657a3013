"""Each block's export form (`export_call`: folded norms, 2-D token matmuls, constant or table-expanded relative
bias, pools as depthwise convs) computes what its `call` computes, on non-trivial weights and statistics."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import keras_coatnet
from keras_coatnet.builder import build_model
from keras_coatnet.layers import MBConvBlock, Stem, TransformerBlock
from keras_coatnet.layers.export_form import ExportOptions

FIXTURES = Path(__file__).parent / "fixtures"
# paper blocks; pre-norm act + early SE + no shortcut bias; BatchNorm transformer; pool stride + MLP bias;
# TF-style (key - query) bias table
MODELS = ("coatnet_micro", "tiny_coatnet_0_rw", "tiny_coatnet_bn_0_rw", "tiny_coatnet_rmlp_nano_rw",
          "tiny_coatnet_tf_style")
OPTIONS = [ExportOptions(attention="batched", rel_bias="constant"), ExportOptions(attention="per_head",
                                                                                  rel_bias="table")]


def randomize(model, seed=0):
    """Non-trivial BatchNorm statistics, norm affines and relative-position tables, so every fold is exercised."""
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


def tiny(name, size=(64, 96)):
    """coatnet_micro, or a shrunken timm config from tests/fixtures/timm(_extra)/<name>."""
    if name == "coatnet_micro":
        return keras_coatnet.create_model(name, input_shape=(*size, 3), classes=10, classifier_activation=None)
    path = next(p for p in (FIXTURES / "timm" / name, FIXTURES / "timm_extra" / name) if p.exists())
    cfg = json.loads((path / "config.json").read_text())["timm_cfg"]
    return build_model(cfg, input_shape=(*size, 3), classes=10, classifier_activation=None)


def _blocks(model, cls):
    return [layer for layer in model.layers if type(layer) is cls]


@pytest.mark.parametrize("cls", [Stem, MBConvBlock, TransformerBlock], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", MODELS)
def test_export_form_matches_call(name, cls):
    model = tiny(name)
    randomize(model)
    blocks = _blocks(model, cls)
    assert blocks, f"{name} has no {cls.__name__}"
    rng = np.random.RandomState(1)
    for block in blocks:
        x = rng.normal(0, 1, (1, *block.input.shape[1:])).astype("float32")
        want = np.asarray(block(x, training=False))
        for options in OPTIONS:
            got = tf.function(lambda t: block.export_call(t, options))(tf.constant(x)).numpy()
            assert got.shape == want.shape
            err = np.abs(got - want).max() / np.abs(want).max()
            assert err <= 1e-5, f"{block.name} {options}: relative error {err:.2e}"


def test_export_options_name_their_modes():
    with pytest.raises(ValueError, match="attention"):
        ExportOptions(attention="flash")
    with pytest.raises(ValueError, match="gelu"):
        ExportOptions(gelu="fast")
