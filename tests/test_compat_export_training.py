"""Each private-API shim of export/_compat.py and training/_compat.py, exercised on its own (TensorFlow)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from export import _compat as export_compat
from training import _compat as training_compat


def _tiny_model():
    inp = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="out")(hidden))


def _tflite(model):
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def test_run_through_graph_replaces_layer_calls():
    model = _tiny_model()
    x = np.ones((2, 4), "float32")
    same = export_compat.run_through_graph(model, x, lambda op: op)
    np.testing.assert_allclose(same, model(x), atol=1e-6)
    doubled = export_compat.run_through_graph(
        model, x, lambda op: (lambda *a, **k: 2 * op(*a, **k)) if op.name == "hidden" else op)
    assert not np.allclose(doubled, same)


def test_ops_details_lists_every_node():
    from export import runtime

    ops = [op["op_name"] for op in export_compat.ops_details(runtime.load(_tflite(_tiny_model())))]
    assert ops.count("FULLY_CONNECTED") == 2 and "SOFTMAX" in ops


def test_tflite_schema_has_the_tables_metadata_writes():
    schema = export_compat.tflite_schema()
    assert hasattr(schema, "BufferT") and hasattr(schema, "MetadataT")


def test_prebuild_builds_optimizer_and_metrics_once():
    model = _tiny_model()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    training_compat.prebuild(model, (np.zeros((2, 4), "float32"), np.zeros((2, 3), "float32")))
    assert model.optimizer.built and len(model.optimizer.variables) > 1
    model.fit(np.ones((4, 4), "float32"), np.eye(3)[[0, 1, 2, 0]].astype("float32"), epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 1


def test_variable_index_finds_each_trained_variable():
    model = _tiny_model()
    opt = keras.optimizers.AdamW(1e-3)
    opt.build(model.trainable_variables)
    assert [training_compat.variable_index(opt, v) for v in model.trainable_variables] == list(range(4))


def test_sublayers_finds_nested_layers():
    assert {"hidden", "out"} <= {layer.name for layer in training_compat.sublayers(_tiny_model(), recursive=True)}


def test_multiworker_log_reduction_is_undone_after_its_block():
    from keras.src.backend.tensorflow import trainer as tf_trainer

    class MultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
        def __init__(self):  # isinstance is all the shim looks at; no cluster is started
            pass

    original = tf_trainer.reduce_per_replica
    with training_compat.multiworker_log_reduction(tf.distribute.get_strategy()):
        assert tf_trainer.reduce_per_replica is original  # other strategies: untouched
    with pytest.raises(RuntimeError):
        with training_compat.multiworker_log_reduction(MultiWorker()):
            assert tf_trainer.reduce_per_replica is not original
            raise RuntimeError("fit failed")
    assert tf_trainer.reduce_per_replica is original  # restored, also after an error
