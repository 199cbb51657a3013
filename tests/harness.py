"""The shared checks (after keras-hub's `run_layer_test` and `run_backbone_test`): one call runs a layer or a
whole model through the contracts it owes its users. Inputs NHWC. Also the tests' one tiny model (`build_tiny_model`;
conftest.py's `tiny_model` / `fresh_tiny_model` fixtures)."""

import tempfile

import keras
import numpy as np

# The tests' tiny model: coatnet_micro at 64x64 with a 10-class softmax head, built from a fixed seed.
TINY_MODEL = "coatnet_micro"
TINY_KWARGS = {"input_shape": (64, 64, 3), "classes": 10}
TINY_SEED = 1234


def build_tiny_model(**overrides):
    """`create_model(TINY_MODEL, **TINY_KWARGS, **overrides)`, seeded with TINY_SEED: every build has the same
    weights."""
    import keras_coatnet as kc

    keras.utils.set_random_seed(TINY_SEED)
    return kc.create_model(TINY_MODEL, **{**TINY_KWARGS, **overrides})


def run_layer_test(cls, init_kwargs, input_shape, expected_output_shape, trainable=True, seed=0):
    """Checks `cls(**init_kwargs)` on input [B, H, W, C] = `input_shape`:
    - config round trip: `from_config(get_config())` has the same config and gives the same outputs;
    - symbolic and eager agree: `compute_output_shape`, a functional model's output shape and the eager output's
      shape all equal `expected_output_shape` (None entries: any size);
    - a `.keras` save and load inside a model gives the same outputs;
    - one training step (`trainable`): every trainable weight gets a finite, non-zero gradient;
    - a mixed_float16 layer computes in float16 with finite outputs, its weights kept in float32.
    Returns the eager output."""
    x = np.random.default_rng(seed).normal(size=input_shape).astype("float32")
    layer = cls(**init_kwargs)
    y = keras.ops.convert_to_numpy(layer(x, training=False))
    _same_shape(y.shape, expected_output_shape, "eager output")
    _same_shape(tuple(layer.compute_output_shape(input_shape)), expected_output_shape, "compute_output_shape")
    inputs = keras.Input(input_shape[1:], batch_size=input_shape[0])
    model = keras.Model(inputs, cls.from_config(layer.get_config())(inputs))
    _same_shape(tuple(model.output_shape), expected_output_shape, "symbolic output")
    twin = cls.from_config(layer.get_config())
    twin(x)
    assert twin.get_config() == layer.get_config()
    twin.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(twin(x, training=False)), y, rtol=1e-5, atol=1e-5)
    model.layers[-1].set_weights(layer.get_weights())
    with tempfile.TemporaryDirectory() as tmp:
        model.save(f"{tmp}/m.keras")
        loaded = keras.models.load_model(f"{tmp}/m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)), y, rtol=1e-5, atol=1e-5)
    if trainable:
        _check_gradients(layer, x)
    half = cls(**init_kwargs, dtype="mixed_float16")
    out = half(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float16", out.dtype
    assert np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))).all()
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in half.weights)
    return y


def run_backbone_test(model_or_builder, input_data, expected_output_shape, builder=None, variable_inputs=(),
                      weights_file=True):
    """Checks a whole model: `model_or_builder` is a keras.Model or a builder (create_model's keyword arguments ->
    a new model; `builder` gives one next to a model). On `input_data` [B, H, W, C]:
    - symbolic: `model.output_shape` is `expected_output_shape` with a None batch;
    - eager: the eager output has `expected_output_shape` (None entries: any size) and inference is deterministic
      (two eager calls are identical);
    - compiled vs eager: `predict` (traced / jitted) agrees with the eager call to 1e-5;
    - config round trip: `from_config(get_config())` with the same weights gives identical predictions;
    - a `.keras` save and `load_model` gives identical predictions;
    - with a builder and `weights_file`: `save_weights` to a `.weights.h5` and `builder(weights=path)` gives
      identical predictions;
    - variable input size, for each `(x, expected_shape)` in `variable_inputs`: a model built for any size
      (None height and width) is called on `x` as it is; else `builder(input_shape=x.shape[1:])` is built for it.
      Both outputs (symbolic and eager) must have `expected_shape`.
    Returns the eager output."""
    if isinstance(model_or_builder, keras.Model):
        model = model_or_builder
    else:
        builder = model_or_builder
        model = builder()
    x = np.asarray(input_data, "float32")
    expected = tuple(expected_output_shape)
    assert tuple(model.output_shape) == (None, *expected[1:]), f"symbolic output: {model.output_shape} != {expected}"
    eager = keras.ops.convert_to_numpy(model(x, training=False))
    _same_shape(eager.shape, expected, "eager output")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), eager)
    predicted = model.predict(x, verbose=0)
    np.testing.assert_allclose(predicted, eager, rtol=1e-5, atol=1e-5)

    twin = type(model).from_config(model.get_config())
    twin.set_weights(model.get_weights())
    np.testing.assert_array_equal(twin.predict(x, verbose=0), predicted)
    with tempfile.TemporaryDirectory() as tmp:
        model.save(f"{tmp}/m.keras")
        loaded = keras.models.load_model(f"{tmp}/m.keras")
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), predicted)
        if builder is not None and weights_file:
            model.save_weights(f"{tmp}/m.weights.h5")
            fresh = builder(weights=f"{tmp}/m.weights.h5")
            np.testing.assert_array_equal(fresh.predict(x, verbose=0), predicted)

    any_size = all(d is None for d in model.input_shape[1:3])
    for other, other_expected in variable_inputs:
        other = np.asarray(other, "float32")
        if any_size:
            net = model
        else:
            assert builder is not None, "a fixed-size model needs a builder for another input size"
            net = builder(input_shape=other.shape[1:])
            assert tuple(net.output_shape) == (None, *tuple(other_expected)[1:]), net.output_shape
        _same_shape(keras.ops.convert_to_numpy(net(other, training=False)).shape, tuple(other_expected),
                    f"eager output at {other.shape}")
    return eager


def _same_shape(shape, expected, what):
    assert len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected)), \
        f"{what}: {shape} != {expected}"


def _check_gradients(layer, x):
    """Every trainable weight of `layer` gets a finite, non-zero gradient of sum(output^2) (TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x, training=True)))
    weights = layer.trainable_weights
    grads = tape.gradient(loss, [w.value for w in weights])
    for w, g in zip(weights, grads):
        assert g is not None, f"no gradient for {w.path}"
        g = np.asarray(g)
        assert np.isfinite(g).all() and np.abs(g).max() > 0, f"gradient of {w.path}: {np.abs(g).max()}"
