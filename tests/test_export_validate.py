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
    metrics.update(graph_max_rel_error=1e-6, confident_agreement=0.9)
    assert not validate.check("fp32", metrics, approx_gelu=True)


def test_threshold_override_applies_to_the_formats_own_metric():
    assert validate.thresholds_for("fp16", {"fp16": 0.02}) == {"max_rel_error": 0.02}
    assert validate.thresholds_for("fp16", {"fp16": 0.02}, approx_gelu=True) == {
        "graph_max_rel_error": 0.02, "confident_agreement": validate.APPROX_GELU_MIN_AGREEMENT}
    assert validate.thresholds_for("int8", {"int8": 0.95}) == {"confident_agreement": 0.95}


def _logits_with_margins(margins, k=10, seed=0):
    """Keras-like softmax outputs [N, k] whose top-1 minus top-2 logit is ``margins`` [N]."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(len(margins), k))
    z[:, 0] = z[:, 1:].max(-1) + np.asarray(margins)  # class 0 on top by exactly the margin
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _swap_top2(p, rows):
    """``p`` with the top-1 and top-2 classes of ``rows`` exchanged: those images flip, the rest stay."""
    p = p.copy()
    for r in rows:
        a, b = np.argsort(p[r])[-2:][::-1]
        p[r, [a, b]] = p[r, [b, a]]
    return p


def test_near_ties_are_counted_apart_and_confident_images_must_agree():
    margins = np.r_[np.full(6, 0.5), np.full(94, 8.0)]  # 6 near-ties (logit margin 0.5), 94 sure images
    ref = _logits_with_margins(margins)
    np.testing.assert_allclose(validate.logit_margins(ref), margins, rtol=1e-9)
    np.testing.assert_allclose(validate.logit_margins(np.log(ref)), margins, rtol=1e-9)  # logits as they are
    # a correct quantized file may flip near-ties: all 6 flipped still passes (limit for 6: 3 + 4.9 + 1 -> 8)
    m = validate.compare(ref, _swap_top2(ref, range(6)))
    assert (m["near_ties"], m["near_tie_flips"], m["confident_agreement"]) == (6, 6, 1.0)
    assert m["top1_agreement"] == 0.94 and validate.check("int8", m)  # 94% overall: the old 0.98 refused it
    # one flipped sure image is a wrong file
    m = validate.compare(ref, _swap_top2(ref, [50]))
    assert m["confident_agreement"] == 93 / 94 and m["top1_agreement"] == 0.99
    assert validate.check("int8", m)  # 93/94 = 0.989 >= 0.98: the format's own tolerance
    m = validate.compare(ref, _swap_top2(ref, range(40, 43)))
    assert not validate.check("int8", m) and "confident_agreement=0.9681 does not meet >= 0.98" in str(
        validate.failure("int8", m))


def test_many_near_ties_flipping_together_is_a_wrong_file():
    ref = _logits_with_margins(np.r_[np.full(100, 1.0), np.full(100, 8.0)])
    assert validate.near_tie_flip_limit(100) == 71  # 50 + 20 + 1: Binomial(100, 1/2) passes it with p < 1e-4
    assert validate.check("int8", validate.compare(ref, _swap_top2(ref, range(71))))
    m = validate.compare(ref, _swap_top2(ref, range(72)))
    assert m["confident_agreement"] == 1.0 and not validate.check("int8", m)
    assert "near_tie_flips=72 does not meet <= 71" in str(validate.failure("int8", m))
