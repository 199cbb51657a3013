"""Model-level guarantees: parameter counts, save/load, heads and pooling, sizes, precision policies, XLA, fit.
The model-level contracts (symbolic vs eager, compiled vs eager, config and save/load round trips, other input
sizes) go through the shared harness (tests/harness.py: run_backbone_test)."""

import math

import keras
import numpy as np
import pytest
from harness import build_tiny_model, run_backbone_test

import keras_coatnet as kc
from keras_coatnet.builder import count_params
from keras_coatnet.layers.common import activation
from keras_coatnet.variants import MODELS

# timm's parameter counts (torch `numel` of parameters) for coatnet_{0..5}_224 with 1000 classes; the paper's
# Table 3 rounds them to 25M, 42M, 75M, 168M. CoAtNet-7 is 2.44B in the paper.
EXPECTED_PARAMS = {
    "coatnet_1": 42_225_776, "coatnet_2": 74_684_744, "coatnet_3": 166_966_264,
    "coatnet_4": 275_425_288, "coatnet_5": 687_472_008,
}


def images(n=2, h=64, w=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, 3)).astype("float32")


@pytest.mark.tensorflow_only
def test_coatnet0_is_timm_coatnet_0_224():
    model = kc.CoAtNet0()
    assert model.name == "CoAtNet0"
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == 25_036_820
    assert count_params(MODELS["coatnet_0"]["config"]) == 25_036_820


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_paper_param_counts(name):
    assert count_params(MODELS[name]["config"]) == EXPECTED_PARAMS[name]


@pytest.mark.tensorflow_only
def test_coatnet7_param_count_matches_paper():
    assert abs(count_params(MODELS["coatnet_7"]["config"]) / 1e9 - 2.44) < 0.01


@pytest.mark.tensorflow_only
def test_every_registered_name_resolves():
    names = kc.list_models()
    for expected in ("coatnet_0", "coatnet_7", "coatnet_0_224", "coatnet_0_rw_224", "coatnet_rmlp_2_rw_384",
                     "coatnet_rmlp_1_rw2_224", "coatnet_nano_cc_224", "coatnet_bn_0_rw_224", "coatnet_pico_rw_224"):
        assert expected in names
    assert kc.list_models("paper") == [f"coatnet_{i}" for i in range(8)]


def test_tiny_model_through_the_backbone_harness(tiny_model):
    """Symbolic and eager shapes, compiled vs eager, config round trip, identical outputs after a .keras save and
    load and after a .weights.h5 loaded with create_model(weights=...); the same network at 96x64 and 32x32."""
    out = run_backbone_test(tiny_model, images(), (2, 10), builder=build_tiny_model,
                            variable_inputs=[(images(1, 96, 64), (1, 10)), (images(1, 32, 32), (1, 10))])
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)  # the softmax head


def test_frozen_backbone_stays_frozen_after_load(fresh_tiny_model, tmp_path):
    # Keras re-creates a frozen layer with trainable=False, which by itself does not reach sub-layers.
    # fresh_tiny_model: this test changes trainable flags.
    model = fresh_tiny_model
    for layer in model.layers:
        layer.trainable = layer.name.startswith("head")
    expected = [w.path for w in model.trainable_weights]
    assert expected and all(p.startswith("head") for p in expected)
    model.save(tmp_path / "frozen.keras")
    loaded = keras.models.load_model(tmp_path / "frozen.keras")
    assert [w.path for w in loaded.trainable_weights] == expected


def _frozen_from_config(layer, input_shape):
    frozen = type(layer).from_config({**layer.get_config(), "trainable": False})
    frozen.build(input_shape)
    return frozen


@pytest.mark.parametrize("layer,input_shape", [
    (kc.layers.SqueezeExcite(8), (None, 8, 8, 32)),
    (kc.layers.Downsample2d(64), (None, 8, 8, 32)),
    (kc.layers.RelativeAttention2d(32, 64, (4, 4), rel_pos_type="bias"), (None, 4, 4, 32)),
    (kc.layers.RelativeAttention2d(32, 32, (4, 4), rel_pos_type="mlp"), (None, 4, 4, 32)),
    (kc.layers.RelativePositionBias((4, 4), 2, kind="mlp"), None),
], ids=["se", "downsample", "attention", "attention_mlp", "rel_pos_mlp"])
def test_layer_recreated_frozen_has_no_trainable_weight(layer, input_shape):
    frozen = _frozen_from_config(layer, input_shape)
    assert frozen.weights and not [w.path for w in frozen.weights if w.trainable]


@pytest.mark.parametrize("name", ["stem", "stages__0__blocks__0", "stages__2__blocks__1"])
def test_block_recreated_frozen_has_no_trainable_weight(tiny_model, name):
    layer = tiny_model.get_layer(name)
    frozen = _frozen_from_config(layer, layer.input.shape)
    assert frozen.weights and not [w.path for w in frozen.weights if w.trainable]


@pytest.mark.parametrize("pooling,shape,other_shape", [(None, (None, 2, 3, 96), (None, 3, 2, 96)),
                                                       ("avg", (None, 96), (None, 96)),
                                                       ("max", (None, 96), (None, 96))])
def test_include_top_false_shapes(pooling, shape, other_shape):
    """Without the head: 64x96 -> (2, 3) maps (or pooled), and the same backbone built at 96x64."""
    def builder(**kw):
        return kc.create_model("coatnet_micro", **{"include_top": False, "pooling": pooling,
                                                   "input_shape": (64, 96, 3), **kw})

    run_backbone_test(builder, images(1, 64, 96), (1,) + shape[1:],
                      variable_inputs=[(images(1, 96, 64), (1,) + other_shape[1:])])


@pytest.mark.tensorflow_only
def test_non_square_input_coatnet0():
    model = kc.CoAtNet0(input_shape=(192, 256, 3), classes=7)
    feats = kc.feature_model(model).output_shape
    assert [f[1:3] for f in feats] == [(48, 64), (24, 32), (12, 16), (6, 8)]
    out = model.predict(images(1, 192, 256), verbose=0)
    assert out.shape == (1, 7) and np.allclose(out.sum(), 1.0, atol=1e-5)


def test_input_tensor():
    tensor = keras.Input((64, 64, 3))
    model = kc.create_model("coatnet_micro", input_tensor=tensor, classes=3)
    assert model.inputs[0] is tensor and model.output_shape == (None, 3)
    run_backbone_test(model, images(), (2, 3))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_softmax_and_norms_in_float32(policy, tiny_model):
    x = images()
    reference = tiny_model.predict(x, verbose=0)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_tiny_model()
        model.set_weights(tiny_model.get_weights())
        block = model.get_layer("stages__2__blocks__0")
        assert block.compute_dtype == policy.split("_")[1]
        assert block.norm1.compute_dtype == "float32" and block.norm2.compute_dtype == "float32"
        assert model.get_layer("predictions").compute_dtype == "float32"
        out = model.predict(x, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out - reference).max() < (0.02 if policy == "mixed_float16" else 0.08)


@pytest.mark.tensorflow_only
def test_jit_compile_predict_and_train(fresh_tiny_model):
    micro = fresh_tiny_model  # a copy: this test compiles and trains it
    x, y = images(4), np.array([0, 1, 2, 3])
    micro.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)
    eager = keras.ops.convert_to_numpy(micro(x, training=False))
    np.testing.assert_allclose(micro.predict(x, verbose=0), eager, atol=1e-5)
    loss = micro.train_on_batch(x, y)
    assert np.isfinite(loss)


def test_fit_reduces_loss_on_a_tiny_problem():
    keras.utils.set_random_seed(0)
    model = kc.create_model("coatnet_micro", input_shape=(32, 32, 3), classes=2, drop_path_rate=0.1,
                            dropout_rate=0.1)
    x = images(32, 32, 32, seed=1)
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype("int32")
    model.compile(optimizer=keras.optimizers.AdamW(3e-3), loss="sparse_categorical_crossentropy")
    first = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    # 30 steps at BatchNorm momentum 0.9 leave the moving statistics behind the fast-moving weights, which on
    # some initializations (they differ per backend) hides the progress at inference: re-estimate them first.
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(x, training=True)
    assert model.evaluate(x, y, verbose=0) < first


def test_training_mode_is_stochastic_and_inference_is_not():
    model = kc.create_model("coatnet_micro", input_shape=(32, 32, 3), classes=4, drop_path_rate=0.5)
    x = images(2, 32, 32)
    run = lambda training: keras.ops.convert_to_numpy(model(x, training=training))
    np.testing.assert_array_equal(run(False), run(False))
    assert not np.allclose(run(True), run(True))


def test_normalize_input_matches_builtin_preprocessing(tiny_model):
    x = images()
    raw = tiny_model.predict(x, verbose=0)
    inner = build_tiny_model(include_preprocessing=False)
    inner.set_weights(tiny_model.get_weights())
    np.testing.assert_allclose(inner.predict(kc.normalize_input(x, "coatnet_micro"), verbose=0), raw, atol=1e-6)
    tensor = kc.normalize_input(keras.ops.convert_to_tensor(x), "coatnet_micro")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tensor), kc.normalize_input(x), atol=1e-6)


def test_normalize_input_uses_the_models_and_the_weights_mean_and_std():
    x = np.full((1, 32, 32, 3), 255.0, "float32")
    np.testing.assert_allclose(kc.normalize_input(x)[0, 0, 0], [1.0, 1.0, 1.0], atol=1e-6)  # timm's 0.5 / 0.5
    imagenet = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(kc.normalize_input(x, "coatnet_bn_0_rw_224")[0, 0, 0], imagenet, atol=1e-5)
    np.testing.assert_allclose(kc.normalize_input(x, "coatnet_bn_0_rw_224", weights="imagenet")[0, 0, 0],
                               imagenet, atol=1e-5)


def test_preprocess_input_passes_through_as_in_keras_applications(tiny_model):
    """Models normalize inside (include_preprocessing=True), so the keras.applications idiom
    `model.predict(preprocess_input(x))` gives the model's own predictions, as for ConvNeXt/EfficientNetV2."""
    x = images(4)
    for data_format in (None, "channels_last", "channels_first"):
        assert kc.preprocess_input(x, data_format=data_format) is x
    np.testing.assert_array_equal(tiny_model.predict(kc.preprocess_input(x), verbose=0),
                                  tiny_model.predict(x, verbose=0))


APPLICATIONS_ARGS = {"include_top": True, "weights": None, "input_tensor": None, "input_shape": None,
                     "pooling": None, "classes": 1000, "classifier_activation": "softmax",
                     "include_preprocessing": True, "name": None, "drop_path_rate": 0.0, "dropout_rate": 0.0}


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("index", range(8))
def test_paper_constructors_have_the_applications_signature_and_args(index):
    import inspect
    import pydoc

    fn = getattr(kc, f"CoAtNet{index}")
    params = inspect.signature(fn).parameters
    assert {k: p.default for k, p in params.items()} == APPLICATIONS_ARGS
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params.values())
    doc = fn.__doc__
    assert f"CoAtNet-{index}" in doc and f'"CoAtNet{index}"' in doc and "\nArgs:\n" in doc and "Returns:" in doc
    for arg in APPLICATIONS_ARGS:
        assert f"\n    {arg}: " in doc, arg
    assert "**kwargs" not in pydoc.render_doc(fn)


def test_exact_gelu_values():
    """activation('gelu') is x * Phi(x) (timm's exact form) to float32 accuracy, on every backend."""
    xs = np.linspace(-10, 10, 20001).astype("float32")
    exact = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in xs.astype("float64")])
    got = keras.ops.convert_to_numpy(activation("gelu")(keras.ops.convert_to_tensor(xs)))
    np.testing.assert_allclose(got, exact, atol=2e-6)
