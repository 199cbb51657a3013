"""AdamW on the relative-position tables is exact on TF: dense gradient, same losses as JAX / PyTorch."""
import importlib.util

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_coatnet.layers.attention import RelativeAttention2d
from tests.training_utils import last_json_line

BETA_2 = 0.999


def _attention_model(kind="bias", map_size=(4, 4)):
    """[B, h, w, 8] -> [B, 16]: one relative attention with a table trained for 4x4 (each entry used many times;
    resized in the graph at another map size), then Dense."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((*map_size, 8))
    x = RelativeAttention2d(8, 8, (4, 4), dim_head=4, rel_pos_type=kind, name="attn")(inp)
    out = keras.layers.Dense(16, name="out")(keras.layers.Flatten()(x))
    return keras.Model(inp, out)


@pytest.mark.parametrize("map_size", [(4, 4), (6, 5)])
@pytest.mark.parametrize("kind", ["bias", "bias_tf"])
def test_adamw_velocity_of_a_table_is_from_the_dense_gradient(kind, map_size):
    model = _attention_model(kind, map_size)
    table = model.get_layer("attn").rel_pos.relative_position_bias_table
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, beta_2=BETA_2, weight_decay=0.0), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *map_size, 8)).astype("float32")
    y = rng.normal(size=(2, 16)).astype("float32")
    expected = np.zeros(table.shape, "float32")
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = keras.losses.mean_squared_error(y, model(x, training=True))
            loss = tf.reduce_mean(loss)
        grad = tape.gradient(loss, table.value)
        dense = tf.convert_to_tensor(grad).numpy()  # duplicates summed
        assert np.abs(dense).max() > 0
        expected = BETA_2 * expected + (1 - BETA_2) * dense ** 2
        model.train_on_batch(x, y)
    velocity = [v for v in model.optimizer.variables if "velocity" in v.path and table.path.replace("/", "_") in v.path]
    assert len(velocity) == 1, [v.path for v in model.optimizer.variables]
    np.testing.assert_allclose(velocity[0].numpy(), expected, rtol=1e-4, atol=1e-12)


_LOSSES_SCRIPT = """
import json, sys
import numpy as np
from tests.test_training_relpos_grad import adamw_losses
print(json.dumps(adamw_losses(list(np.load(sys.argv[1], allow_pickle=True)))))
"""


def adamw_losses(weights, steps=10):
    """Losses of `steps` AdamW (lr 1e-2) train_on_batch calls of the attention model from `weights`."""
    model = _attention_model()
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.0), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    y = rng.normal(size=(2, 16)).astype("float32")
    return [float(model.train_on_batch(x, y)) for _ in range(steps)]


@pytest.fixture(scope="module")
def start_weights(tmp_path_factory):
    model = _attention_model()
    path = tmp_path_factory.mktemp("w") / "weights.npy"
    arr = np.empty(len(model.weights), object)
    arr[:] = [w.numpy() for w in model.weights]
    np.save(path, arr, allow_pickle=True)
    return str(path)


def _losses(backend, weights_path):
    import subprocess
    import sys

    from tests.training_utils import REPO, python_env

    p = subprocess.run([sys.executable, "-c", _LOSSES_SCRIPT, weights_path], cwd=REPO,
                       env=python_env(KERAS_BACKEND=backend), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return np.array(last_json_line(p.stdout))


def test_tf_losses_match_jax_for_10_adamw_steps(start_weights):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    tf_losses, jax_losses = _losses("tensorflow", start_weights), _losses("jax", start_weights)
    np.testing.assert_allclose(tf_losses, jax_losses, rtol=1e-4)
