"""One model for every input size and channel count: the keras.applications contract, timm parity at run-time
sizes (tests/fixtures/timm_sizes), the TF-graph form of the table resize, odd sizes, channels."""

import glob
import json
import os

import keras
import numpy as np
import pytest

import keras_coatnet as kc
from keras_coatnet.builder import feature_sizes
from keras_coatnet.layers.attention import (
    RelativeAttention2d,
    log_offsets,
    log_offsets_in_graph,
    relative_index,
    relative_index_in_graph,
)
from keras_coatnet.layers.table_resize import interpolation_matrix, interpolation_matrix_in_graph
from keras_coatnet.variants import PAPER_CONFIGS, TIMM_CONFIGS

HERE = os.path.dirname(__file__)
SIZES = sorted(glob.glob(os.path.join(HERE, "fixtures", "timm_sizes", "*")))
TOLERANCE = 1e-5  # relative, as test_parity
TF = keras.backend.backend() == "tensorflow"
only_tf = pytest.mark.skipif(not TF, reason="sizes known only at run time exist in TensorFlow graphs")


def rel_error(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def fixture(folder):
    with open(os.path.join(folder, "config.json")) as f:
        meta = json.load(f)
    runs = {tuple(map(int, os.path.basename(p)[3:-4].split("x"))): p
            for p in sorted(glob.glob(os.path.join(folder, "io_*x*.npz")))}
    return meta, os.path.join(folder, "model.safetensors"), runs


def from_fixture(meta, weights, input_shape=(None, None, 3)):
    """The fixture's model at `input_shape`, its tables made for the checkpoint's size."""
    return kc.from_timm_config(meta["timm_cfg"], input_shape=input_shape, classes=meta["num_classes"],
                               weights=weights, table_size=tuple(meta["img_size"]))


def test_size_fixtures_present():
    assert len(SIZES) == 4, SIZES


@pytest.mark.parametrize("folder", SIZES, ids=os.path.basename)
def test_one_model_matches_timm_at_every_size(folder):
    """A (None, None, 3) model from one checkpoint against timm models built at each size (timm resizes the
    tables in checkpoint_filter_fn, we in the graph); and against our own model built at that size (<= 1e-6)."""
    meta, weights, runs = fixture(folder)
    model = from_fixture(meta, weights)
    features = kc.feature_model(model)
    for (h, w), path in runs.items():
        ref = np.load(path)
        x = ref["images_nhwc"]
        logits = model.predict(x, verbose=0)
        assert rel_error(logits, ref["logits"]) < TOLERANCE, (h, w)
        assert np.array_equal(logits.argmax(-1), ref["logits"].argmax(-1))
        for i, feat in enumerate(features.predict(x, verbose=0)):
            assert feat.shape == ref[f"stage{i}_nhwc"].shape, (h, w, i)
            assert rel_error(feat, ref[f"stage{i}_nhwc"]) < TOLERANCE, (h, w, i)
        built_here = from_fixture(meta, weights, input_shape=(h, w, 3))  # the loader resizes the tables
        assert rel_error(logits, built_here.predict(x, verbose=0)) <= 1e-6, (h, w)


def test_at_the_trained_size_the_tables_are_not_resized():
    """Bit-identical to a model built at the trained size (the resize path is not taken)."""
    meta, weights, runs = fixture(os.path.join(HERE, "fixtures", "timm_sizes", "tiny_coatnet_0_rw_sizes"))
    x = np.load(runs[tuple(meta["img_size"])])["images_nhwc"]
    fixed = from_fixture(meta, weights, input_shape=(*meta["img_size"], 3))
    dynamic = from_fixture(meta, weights)
    assert np.array_equal(dynamic.predict(x, verbose=0), fixed.predict(x, verbose=0))


@only_tf
def test_sizes_known_only_at_run_time_in_a_tf_graph():
    """tf.function with a [None, None, None, 3] signature (what reduce_retracing and SavedModel give): the
    graph form of the resize, equal to the static one (<= 1e-6), timm's at every size, and under XLA; at the
    trained size each bias is the trained table's, bit for bit."""
    import tensorflow as tf

    meta, weights, runs = fixture(os.path.join(HERE, "fixtures", "timm_sizes", "tiny_coatnet_tf_style_sizes"))
    model = from_fixture(meta, weights)
    spec = [tf.TensorSpec([None, None, None, 3], tf.float32)]
    graph = tf.function(lambda x: model(x, training=False), input_signature=spec)
    xla = tf.function(lambda x: model(x, training=False), input_signature=spec, jit_compile=True)
    for (h, w), path in runs.items():
        ref = np.load(path)
        x = ref["images_nhwc"]
        eager = model(x, training=False).numpy()
        out = graph(x).numpy()
        assert rel_error(out, eager) <= 1e-6, (h, w)
        assert rel_error(out, ref["logits"]) < TOLERANCE, (h, w)
        assert rel_error(xla(x).numpy(), ref["logits"]) < TOLERANCE, (h, w)
    blocks = [layer for layer in model.layers if type(layer).__name__ == "TransformerBlock"]
    for block in blocks:
        rel_pos = block.attn.rel_pos
        bias = tf.function(rel_pos, input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
        trained = np.zeros((1, *rel_pos.size, 1), "float32")
        assert np.array_equal(bias(trained).numpy(), keras.ops.convert_to_numpy(rel_pos()))


@only_tf
@pytest.mark.parametrize("src", [1, 3, 7, 13, 27])
def test_graph_resize_matrix_equals_numpy(src):
    import tensorflow as tf

    fn = tf.function(lambda d: interpolation_matrix_in_graph(src, d), input_signature=[tf.TensorSpec([], tf.int32)])
    for dst in (1, 3, 5, 7, 13, 15, 27, 41, 63, 199):
        np.testing.assert_allclose(fn(tf.constant(dst)).numpy(), interpolation_matrix(src, dst), rtol=0,
                                   atol=1e-12, err_msg=f"{src} -> {dst}")


@only_tf
@pytest.mark.parametrize("size", [(1, 1), (1, 5), (4, 4), (3, 7), (14, 9)])
def test_graph_index_and_offsets_equal_numpy(size):
    import tensorflow as tf

    spec = [tf.TensorSpec([], tf.int32)] * 2
    index = tf.function(lambda h, w: relative_index_in_graph(h, w), input_signature=spec)
    tf_index = tf.function(lambda h, w: relative_index_in_graph(h, w, True), input_signature=spec)
    offsets = tf.function(log_offsets_in_graph, input_signature=spec)
    h, w = size
    assert np.array_equal(index(h, w).numpy(), relative_index(h, w).reshape(-1))
    assert np.array_equal(tf_index(h, w).numpy(), relative_index(h, w, key_minus_query=True).reshape(-1))
    assert np.array_equal(offsets(h, w).numpy(), log_offsets(h, w))


# --- odd sizes -------------------------------------------------------------------------------------------------

def test_odd_sizes_halve_as_documented():
    """Every block's output map is what `feature_sizes` says (strided convs and Transformer pools: ceiling;
    pooling MBConvs: floor, as timm), so the bias covers exactly the tokens attention sees; stage i of a
    strided-conv CoAtNet is ceil(H / 2^(i+2)) on every side."""
    for name, cfg in (("coatnet_0", PAPER_CONFIGS["coatnet_0"]), ("coatnet_0_rw", TIMM_CONFIGS["coatnet_0_rw"])):
        model = kc.from_timm_config(cfg, input_shape=(None, None, 3), include_top=False)
        features = kc.feature_model(model)
        for h, w in ((123, 123), (65, 63), (97, 95), (33, 47)):
            outs = features.predict(np.zeros((1, h, w, 3), "float32"), verbose=0)
            sizes = feature_sizes(cfg, (h, w))
            ends = np.cumsum(cfg["depths"])  # the index (into block sizes) of each stage's last block
            assert [o.shape[1:3] for o in outs] == [sizes[e] for e in ends], (name, h, w)
            if name == "coatnet_0":
                assert [o.shape[1:3] for o in outs] == [(-(-h // 2 ** (i + 2)), -(-w // 2 ** (i + 2)))
                                                        for i in range(4)]


def test_attention_at_an_odd_size_sees_every_token_pair():
    """A 4x4-trained attention at 5x3: the bias is [heads, 15, 15] and is the resized table gathered at each
    (query, key) offset."""
    attn = RelativeAttention2d(8, 8, (4, 4), dim_head=4, rel_pos_type="bias")
    attn.build((None, 5, 3, 8))
    x = np.zeros((1, 5, 3, 8), "float32")
    bias = keras.ops.convert_to_numpy(attn.rel_pos(x))
    table = keras.ops.convert_to_numpy(attn.rel_pos.table(5, 3))  # [(2*5-1)(2*3-1), heads]
    assert bias.shape == (2, 15, 15) and table.shape == (45, 2)
    np.testing.assert_array_equal(bias, table[relative_index(5, 3)].transpose(2, 0, 1))
    assert attn(x).shape == (1, 5, 3, 8)


# --- the keras.applications contract -----------------------------------------------------------------------------

@pytest.mark.tensorflow_only
def test_keras_applications_contract_coatnet0():
    """The calls of keras/src/applications/applications_test.py (no top: default, 1 channel, 123x123,
    a conv input_tensor), on CoAtNet-0."""
    assert kc.CoAtNet0(weights=None, include_top=False).output_shape == (None, None, None, 768)
    assert kc.CoAtNet0(weights=None, include_top=False, input_shape=(None, None, 1)).output_shape[-1] == 768
    assert kc.CoAtNet0(weights=None, include_top=False, input_shape=(123, 123, 3)).output_shape == (None, 4, 4, 768)
    inputs = keras.Input((200, 200, 4))
    x = keras.layers.Conv2D(3, 2, strides=2)(inputs)
    model = kc.CoAtNet0(weights=None, include_top=False, input_tensor=x)
    assert model.inputs[0].shape[1:] == (200, 200, 4) and model.output_shape == (None, 4, 4, 768)
    assert kc.CoAtNet0(weights=None).input_shape == (None, 224, 224, 3)  # with the classifier: 224


TINY = {"embed_dim": (16, 32, 64, 64), "depths": (1, 1, 1, 1), "stem_width": (8, 16), "head_hidden_size": 64}


def tiny(**kwargs):
    cfg = {**PAPER_CONFIGS["coatnet_0"], **TINY}
    return kc.from_timm_config(cfg, classes=5, **kwargs)


def test_mixed_precision_at_run_time_sizes():
    reference = tiny(input_shape=(None, None, 3))
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = tiny(input_shape=(None, None, 3))
    finally:
        keras.config.set_dtype_policy("float32")
    mixed.set_weights(reference.get_weights())
    rng = np.random.default_rng(0)
    for h, w in ((64, 64), (96, 64), (65, 97)):
        x = rng.normal(size=(2, h, w, 3)).astype("float32")
        out = mixed.predict(x, verbose=0).astype("float32")
        assert np.isfinite(out).all()
        assert rel_error(out, reference.predict(x, verbose=0)) < 3e-2, (h, w)


def test_keras_file_round_trip_keeps_the_table_size(tmp_path):
    model = tiny(input_shape=(None, None, 3), table_size=(96, 96))
    attn = next(layer for layer in model.layers if type(layer).__name__ == "TransformerBlock").attn
    assert attn.rel_pos.get_config()["size"] == (6, 6)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).normal(size=(1, 80, 112, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# --- channels ------------------------------------------------------------------------------------------------------

def test_pretrained_stem_adapts_to_any_channel_count(tmp_path):
    """timm's adapt_input_conv: a 1-channel model equals the RGB model on the gray image repeated 3 times (sum over
    RGB); a 6-channel model on [x, x] equals the RGB model on x (RGB twice, scaled by 3/6); a 4-channel model's
    first conv is RGB, R again, times 3/4."""
    rgb = tiny(input_shape=(None, None, 3))
    path = str(tmp_path / "rgb.safetensors")
    _save_state_dict(rgb, path)
    x = np.random.default_rng(2).normal(size=(2, 64, 96, 1)).astype("float32")
    want = rgb.predict(np.repeat(x, 3, axis=-1), verbose=0)
    gray = tiny(input_shape=(None, None, 1), weights=path)
    assert rel_error(gray.predict(x, verbose=0), want) < 1e-5
    six = tiny(input_shape=(None, None, 6), weights=path)
    x3 = np.repeat(x, 3, axis=-1)
    assert rel_error(six.predict(np.concatenate([x3, x3], -1), verbose=0), want) < 1e-5
    four = tiny(input_shape=(64, 64, 4), weights=path)
    k3 = keras.ops.convert_to_numpy(rgb.get_layer("stem").conv1[-1].kernel)
    k4 = keras.ops.convert_to_numpy(four.get_layer("stem").conv1[-1].kernel)
    np.testing.assert_allclose(k4, np.concatenate([k3, k3[:, :, :1]], axis=2) * 0.75, rtol=1e-6)


def _save_state_dict(model, path):
    """The model's weights as a timm state_dict in `path` (PyTorch layouts)."""
    from safetensors.numpy import save_file

    from keras_coatnet import timm_weights

    tensors = {}
    for key, (variable, layer) in timm_weights.variable_map(model).items():
        value = keras.ops.convert_to_numpy(variable)
        if value.ndim == 4 and isinstance(layer, keras.layers.DepthwiseConv2D):
            value = value.transpose(2, 3, 0, 1)
        elif value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        elif value.ndim == 2 and isinstance(layer, keras.layers.Dense):
            value = value.T
        tensors[key] = np.ascontiguousarray(value, "float32")
    save_file(tensors, path)


CHANS = os.path.join(HERE, "fixtures", "timm_chans", "tiny_coatnet_0_rw_chans")


@pytest.mark.parametrize("channels", [1, 2, 4, 5])
def test_adapted_stem_matches_timm_in_chans(channels):
    """A 3-channel checkpoint loaded into a C-channel model equals timm's in_chans=C model loaded from it."""
    with open(os.path.join(CHANS, "config.json")) as f:
        meta = json.load(f)
    ref = np.load(os.path.join(CHANS, f"io_c{channels}.npz"))
    model = kc.from_timm_config(meta["timm_cfg"], input_shape=(None, None, channels), classes=meta["num_classes"],
                                weights=os.path.join(CHANS, "model.safetensors"), table_size=tuple(meta["img_size"]))
    x = ref["images_nhwc"]
    assert rel_error(model.predict(x, verbose=0), ref["logits"]) < TOLERANCE
    for i, feat in enumerate(kc.feature_model(model).predict(x, verbose=0)):
        assert rel_error(feat, ref[f"stage{i}_nhwc"]) < TOLERANCE, i


def test_same_padding_pools_count_the_padded_zero():
    """padding='same' 2x2 pools are timm's AvgPool2dSame: an odd side padded at its end with a zero that the
    average counts; shortcut and strided main path then agree at odd sizes."""
    from keras_coatnet.layers.common import Pool2d

    x = np.arange(9, dtype="float32").reshape(1, 3, 3, 1)
    out = keras.ops.convert_to_numpy(Pool2d("avg2", padding="same")(x))[0, :, :, 0]
    np.testing.assert_allclose(out, [[(0 + 1 + 3 + 4) / 4, (2 + 5) / 4], [(6 + 7) / 4, 8 / 4]])
    cfg = {**PAPER_CONFIGS["coatnet_0"], **TINY, "conv_cfg": {"padding": "same", "stride_mode": "pool"}}
    model = kc.from_timm_config(cfg, input_shape=(None, None, 3), include_top=False)
    assert model.predict(np.zeros((1, 97, 65, 3), "float32"), verbose=0).shape == (1, 4, 3, 64)


def test_preprocessing_with_other_channels_needs_a_mean_per_channel():
    """timm's uniform 0.5 mean/std applies to any channel count; ImageNet's RGB mean/std raises one line."""
    gray = tiny(input_shape=(None, None, 1), include_preprocessing=True)
    assert gray.get_layer("preprocessing").mean == (0.5,)
    with pytest.raises(ValueError, match="include_preprocessing=False") as e:
        tiny(input_shape=(64, 64, 2), include_preprocessing=True, mean=(0.485, 0.456, 0.406),
             std=(0.229, 0.224, 0.225))
    assert "\n" not in str(e.value)
    two = tiny(input_shape=(64, 64, 2), include_preprocessing=True, mean=(0.1, 0.2), std=(0.3, 0.4))
    assert two.get_layer("preprocessing").std == (0.3, 0.4)


@only_tf
def test_a_run_time_size_model_exports_at_a_chosen_size(tmp_path):
    """A (None, None, 3) model (tables for 224) exported at 64x96: the export view resizes the tables for
    that map, and the fp32 file equals Keras at 64x96 (<= 1e-5 relative, the fp32 threshold is 1e-4)."""
    from export.api import export_model

    model = kc.create_model("coatnet_micro", input_shape=(None, None, 3), classes=10)
    path = str(tmp_path / "m.keras")
    model.save(path)
    report = export_model(path, str(tmp_path / "out"), formats=["fp32"], calibration_source="digits",
                          input_size=(64, 96), progress=lambda *a: None)
    fp32 = report["formats"]["fp32"]
    assert report["input_size"] == [64, 96] and fp32["passed"]
    assert fp32["max_rel_error"] <= 1e-5 and fp32["top1_agreement"] == 1.0
