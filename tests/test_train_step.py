"""The TensorFlow training step (issue 12, defect 9: the step was slow).

Profiled against kecam, the difference was Keras 3's BatchNormalization, which on TensorFlow computes its batch
statistics and normalization with ~10 elementwise ops and reductions each way where tf.keras ran one fused
kernel; the q/k/v indexing, whose gradient is three zero-filled StridedSliceGrads; and the exact GELU (Erfc and
~10 elementwise gradient passes over timm's wide MBConv activations). These tests pin the graph of a training
step (op counts, not time: timing lives in benchmarks/training.py) and check that the fused BatchNorm and the
compiled GELU compute what Keras's layer and the GELU formula do.
"""
import collections
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_coatnet as kc
from keras_coatnet._compat import sublayers
from keras_coatnet.layers import BatchNorm
from keras_coatnet.layers.common import activation

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the TensorFlow graph")
MICRO_GELUS = 1 + 2 * 2 + 3 * 1  # coatnet_micro: stem 1, two MBConv blocks 2 each, three Transformer blocks 1 each


def _train_step_graph(model, batch=2):
    """The traced graph of one forward (training=True) + gradient step."""
    x = tf.zeros((batch, *model.input_shape[1:]))
    y = tf.zeros((batch,), tf.int32)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return tape.gradient(loss, model.trainable_weights)

    return step.get_concrete_function(x, y).graph


def _train_step_ops(model):
    """Counter of op types in the training step's graph."""
    return collections.Counter(op.type for op in _train_step_graph(model).get_operations())


def test_train_step_batchnorm_is_one_fused_op_each_way():
    model = kc.create_model("coatnet_micro", input_shape=(64, 64, 3), classes=10, classifier_activation=None)
    layers = sublayers(model, recursive=True)
    bns = [la for la in layers if isinstance(la, keras.layers.BatchNormalization)]
    lns = [la for la in layers if isinstance(la, keras.layers.LayerNormalization)]
    assert len(bns) >= 5 and lns
    ops = _train_step_ops(model)
    assert ops["FusedBatchNormV3"] == len(bns)
    assert ops["FusedBatchNormGradV3"] == len(bns)
    # Unfused statistics (moments: a mean of squared differences) are left to the LayerNorms only.
    assert ops["SquaredDifference"] == len(lns)


def test_train_step_splits_qkv_without_strided_slice_gradients():
    model = kc.create_model("coatnet_micro", input_shape=(64, 64, 3), classes=10, classifier_activation=None)
    ops = _train_step_ops(model)
    assert ops["StridedSliceGrad"] == 0


def test_train_step_gelu_is_one_compiled_kernel_each_way():
    """tf.nn.gelu's exact form ran Erfc (twice Erf's CPU time) and ~10 elementwise gradient passes, a third of
    CoAtNet-0's step; each GELU is now one XLA kernel forward and one for its gradient."""
    model = kc.create_model("coatnet_micro", input_shape=(64, 64, 3), classes=10, classifier_activation=None)
    graph_ops = _train_step_graph(model).get_operations()
    types = collections.Counter(op.type for op in graph_ops)
    assert types["Erfc"] == 0 and types["Erf"] == 0  # no elementwise GELU left in the step's own graph
    compiled = [op for op in graph_ops if "_XlaMustCompile" in op.node_def.attr and op.get_attr("_XlaMustCompile")]
    assert len(compiled) == 2 * MICRO_GELUS


def test_keras_model_converts_to_tflite_with_gelu_ops():
    """A user's own TFLiteConverter.from_keras_model still finds each GELU (the converter matches the
    0.5 * x * (1 + erf(x / sqrt(2))) form; other arrangements leave a tf.Erf that TFLite has no kernel for)."""
    from ai_edge_litert.interpreter import Interpreter

    from export._compat import ops_details
    model = kc.create_model("coatnet_micro", input_shape=(32, 32, 3), classes=10)
    flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = Interpreter(model_content=flat)
    names = [d["op_name"] for d in ops_details(interpreter)]
    assert names.count("GELU") == MICRO_GELUS
    interpreter.allocate_tensors()
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)


def test_exact_gelu_gradient_is_phi_plus_x_times_density():
    x = tf.constant(np.linspace(-10, 10, 2001), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = activation("gelu")(x)
    grad = tape.gradient(y, x).numpy()
    slope = [0.5 * math.erfc(-v / math.sqrt(2)) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
             for v in x.numpy().astype("float64")]
    np.testing.assert_allclose(grad, slope, atol=1e-6)


def test_frozen_or_synchronized_batchnorm_keeps_keras_path():
    """A frozen BN normalizes with its moving statistics; a synchronized one all-reduces them: neither is fused."""
    layer = BatchNorm(epsilon=1e-5, momentum=0.9)
    layer.build((None, 4, 4, 8))
    layer.synchronized = True
    assert "FusedBatchNormV3" not in _layer_ops(layer)
    frozen = BatchNorm(epsilon=1e-5, momentum=0.9, trainable=False)
    frozen.build((None, 4, 4, 8))
    assert "FusedBatchNormV3" not in _layer_ops(frozen)


def _layer_ops(layer):
    fn = tf.function(lambda t: layer(t, training=True))
    return {op.type for op in fn.get_concrete_function(tf.zeros((2, 4, 4, 8))).graph.get_operations()}


@pytest.mark.parametrize("shape", [(4, 6, 5, 8), (1, 1, 1, 8), (3, 1, 1, 16)])
def test_fused_batchnorm_matches_keras_in_training(shape):
    """Output, gradients and the moving statistics after two steps equal Keras's BatchNormalization."""
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, shape).astype("float32")
    dy = rng.normal(size=shape).astype("float32")
    results = []
    for cls in (keras.layers.BatchNormalization, BatchNorm):
        layer = cls(epsilon=1e-5, momentum=0.9)
        layer.build(shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, shape[-1]).astype("float32"))
        layer.beta.assign(np.linspace(-1, 1, shape[-1]).astype("float32"))
        xt = tf.constant(x)
        for _ in range(2):
            with tf.GradientTape() as tape:
                tape.watch(xt)
                y = layer(xt, training=True)
                loss = tf.reduce_sum(y * dy)
            grads = tape.gradient(loss, [xt, layer.gamma.value, layer.beta.value])
        results.append([y, *grads, layer.moving_mean, layer.moving_variance])
    for keras_value, fused_value in zip(*results):
        np.testing.assert_allclose(np.asarray(fused_value), np.asarray(keras_value), rtol=1e-4, atol=1e-4)


def test_fused_batchnorm_under_mixed_precision_returns_float32():
    """The models keep BatchNorm in float32 under mixed_bfloat16; a bfloat16 input is normalized in float32."""
    layer = BatchNorm(epsilon=1e-5, momentum=0.9, dtype="float32")
    x = tf.cast(tf.random.normal((2, 4, 4, 8)), tf.bfloat16)
    y = layer(x, training=True)
    assert y.dtype == tf.float32
    np.testing.assert_allclose(tf.reduce_mean(y, (0, 1, 2)).numpy(), 0.0, atol=1e-5)
