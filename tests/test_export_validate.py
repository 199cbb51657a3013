"""Validation thresholds: what a format must meet against the Keras model (no conversion needed)."""

import numpy as np

from export import validate


def _outputs(n=50, k=10, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(k) * 0.3, size=n)


def test_exact_float_file_is_held_to_its_max_error():
    ref = _outputs()
    metrics = validate.compare(ref, ref + 2e-4)
    assert not validate.check("fp32", metrics)  # 2e-4 > fp32's 1e-4
    assert "max_rel_error" in str(validate.failure("fp32", metrics))


def test_approximate_gelu_float_file_is_judged_against_its_own_graph_and_by_top1():
    keras_out = _outputs()
    graph = keras_out * 0.7 + _outputs(seed=1) * 0.05  # another function: far from Keras, same top-1 mostly
    graph[np.arange(50), keras_out.argmax(-1)] += 0.5
    metrics = validate.compare(keras_out, graph + 1e-6)
    metrics["graph_max_rel_error"] = validate.compare(graph, graph + 1e-6)["max_rel_error"]
    assert metrics["max_rel_error"] > 0.1  # what the old fixed bound refused
    assert validate.check("fp32", metrics, approx_gelu=True), metrics
    # a file that drifted from the graph it was converted from fails, whatever its top-1
    metrics["graph_max_rel_error"] = 1e-3
    assert not validate.check("fp32", metrics, approx_gelu=True)
    assert "graph_max_rel_error=0.001 does not meet <= 0.0001" in str(validate.failure("fp32", metrics))
    # and so does one whose top-1 moved away from the Keras model's
    metrics.update(graph_max_rel_error=1e-6, top1_agreement=0.9)
    assert not validate.check("fp32", metrics, approx_gelu=True)


def test_threshold_override_applies_to_the_formats_own_metric():
    assert validate.thresholds_for("fp16", {"fp16": 0.02}) == {"max_rel_error": 0.02}
    assert validate.thresholds_for("fp16", {"fp16": 0.02}, approx_gelu=True) == {
        "graph_max_rel_error": 0.02, "top1_agreement": validate.APPROX_GELU_MIN_AGREEMENT}
    assert validate.thresholds_for("int8", {"int8": 0.95}) == {"top1_agreement": 0.95}
