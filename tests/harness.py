"""The shared layer check (after keras-hub's `run_layer_test`): one call runs every layer through the contracts a
Keras layer owes its users. Inputs NHWC."""

import keras
import numpy as np


def run_layer_test(cls, init_kwargs, input_shape, expected_output_shape, trainable=True, seed=0):
    """Checks `cls(**init_kwargs)` on input [B, H, W, C] = `input_shape`:
    - config round trip: `from_config(get_config())` has the same config and gives the same outputs;
    - symbolic and eager agree: `compute_output_shape`, a functional model's output shape and the eager output's
      shape all equal `expected_output_shape` (None entries: any size);
    - a `.keras` save and load inside a model gives the same outputs;
    - one training step (`trainable`): every trainable weight gets a finite, non-zero gradient;
    - a mixed_float16 layer computes in float16 with finite outputs, its weights kept in float32.
    Returns the eager output."""
    import tempfile

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
