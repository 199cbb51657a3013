"""The export view computes the Keras model's function with an int8-friendlier graph."""

import numpy as np
import pytest
import tensorflow as tf
from test_export_forms import randomize, tiny

import keras_coatnet
from export import graph
from export.errors import ExportError


# paper blocks; pre-norm act + early SE + no shortcut bias; BatchNorm transformer; pool stride + MLP bias;
# TF-style (key - query) bias table; non-square token grids for the run-time table expansion
@pytest.mark.parametrize("name,attention,rel_bias,size", [
    ("coatnet_micro", "batched", "constant", (64, 64)), ("coatnet_micro", "per_head", "table", (64, 64)),
    ("coatnet_micro", "per_head", "constant", (64, 96)), ("tiny_coatnet_0_rw", "batched", "table", (64, 128)),
    ("tiny_coatnet_bn_0_rw", "batched", "constant", (64, 64)),
    ("tiny_coatnet_rmlp_nano_rw", "per_head", "table", (96, 64)),
    ("tiny_coatnet_tf_style", "batched", "table", (64, 96))])
def test_view_matches_keras(name, attention, rel_bias, size):
    model = tiny(name, size)
    randomize(model)
    x = np.random.RandomState(1).uniform(0, 255, (1, *size, 3)).astype("float32")
    want = model(x, training=False).numpy()
    opts = graph.Options(attention=attention, rel_bias=rel_bias)
    got = tf.function(graph.forward(model, opts))(tf.constant(x)).numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("h,w", [(2, 2), (7, 7), (14, 14), (6, 9), (9, 2)])
def test_toeplitz_expand_equals_the_gathered_bias(h, w):
    from keras_coatnet.layers.attention import relative_index, toeplitz_expand

    table = np.random.RandomState(h * w).normal(size=(3, 2 * h - 1, 2 * w - 1)).astype("float32")
    want = table.reshape(3, -1)[:, relative_index(h, w).reshape(-1)].reshape(3, h * w, h * w)
    got = toeplitz_expand(tf.constant(table), h, w).numpy()
    np.testing.assert_array_equal(got, want)


def test_auto_options_pick_per_format():
    auto = graph.Options()
    assert auto.resolve("fp32").as_dict() == {"gelu": "exact", "attention": "batched", "rel_bias": "constant"}
    assert auto.resolve("fp16").as_dict()["rel_bias"] == "table"
    assert auto.resolve("int8_full").as_dict() == {"gelu": "exact", "attention": "per_head", "rel_bias": "constant"}
    assert auto.resolve("int16x8").as_dict() == {"gelu": "exact", "attention": "per_head", "rel_bias": "table"}
    with pytest.raises(ExportError, match="int8_full needs rel_bias 'constant'"):
        graph.Options(rel_bias="table").resolve("int8_full")
    for cpu_int8 in ("int8", "qat_int8"):  # attention in float islands: batched, constant bias
        assert auto.resolve(cpu_int8).as_dict() == {"gelu": "exact", "attention": "batched", "rel_bias": "constant"}
    assert graph.Options(attention="batched").resolve("int8_full").attention == "batched"  # explicit choices stay
    with pytest.raises(ValueError, match="attention"):
        graph.Options(attention="flash")


def test_view_rebuilds_every_block_and_keeps_no_runtime_gather():
    model = keras_coatnet.create_model("coatnet_micro", input_shape=(64, 64, 3), classes=10)
    blocks = [l.name for l in model.layers if l.name.startswith("stages__")]
    assert set(blocks) <= set(graph.known_layers(model)) and "stem" in graph.known_layers(model)
    attn = model.get_layer(blocks[-1]).attn
    bias = attn.rel_pos.constant(attn.size)
    assert bias.shape == (attn.num_heads, 4, 4)  # 64 / 32 = 2x2 tokens -> [heads, 4, 4]


def test_approximate_gelu_changes_the_function_a_little():
    model = keras_coatnet.create_model("coatnet_micro", input_shape=(32, 32, 3), classes=10,
                                       classifier_activation=None)
    x = np.random.RandomState(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    want = model(x, training=False).numpy()
    got = tf.function(graph.forward(model, graph.Options(gelu="tanh")))(tf.constant(x)).numpy()
    err = np.abs(got - want).max() / np.abs(want).max()
    assert 0 < err < 1e-2
    with pytest.raises(ValueError, match="gelu"):
        graph.Options(gelu="fast")
