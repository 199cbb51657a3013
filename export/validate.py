"""Agreement between an exported model and the Keras model on held-out images."""

import numpy as np

from export.errors import ValidationError
from export.formats import FORMATS

# A float file made with an approximate GELU (--gelu tanh / sigmoid) computes another function than the Keras
# model: it is held to its format's float bound against the approximated graph it was converted from, and to
# this top-1 agreement with the Keras model (the same minimum as the quantized formats).
APPROX_GELU_MIN_AGREEMENT = 0.98


def compare(ref, got, labels=None):
    """Metrics of outputs ``got`` [N, K] against Keras outputs ``ref`` [N, K] (and true ``labels`` [N])."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    diff = np.abs(ref - got)
    out = {
        "n": int(len(ref)),
        "max_abs_error": float(diff.max()),
        "max_rel_error": float(diff.max() / max(np.abs(ref).max(), 1e-12)),
        "top1_agreement": float(np.mean(ref.argmax(-1) == got.argmax(-1))),
    }
    if labels is not None:
        out["accuracy"] = float(np.mean(got.argmax(-1) == labels))
        out["keras_accuracy"] = float(np.mean(ref.argmax(-1) == labels))
    return out


def thresholds_for(fmt, overrides=None, approx_gelu=False):
    """{metric: limit} that format ``fmt`` must meet: errors (``*_error``) at most, agreement at least.

    ``approx_gelu``: the float formats are bounded by ``graph_max_rel_error`` (vs the approximated graph)
    and by APPROX_GELU_MIN_AGREEMENT top-1 agreement with the Keras model."""
    spec = FORMATS[fmt]
    value = (overrides or {}).get(fmt)
    if spec.float_error is None:
        return {"top1_agreement": spec.min_agreement if value is None else value}
    limit = spec.float_error if value is None else value
    if approx_gelu:
        return {"graph_max_rel_error": limit, "top1_agreement": APPROX_GELU_MIN_AGREEMENT}
    return {"max_rel_error": limit}


def _meets(key, value, limit):
    return value <= limit if key.endswith("_error") else value >= limit


def check(fmt, metrics, overrides=None, approx_gelu=False):
    """Adds ``passed``/``threshold`` to ``metrics``; returns True if the format meets every threshold."""
    limits = thresholds_for(fmt, overrides, approx_gelu)
    passed = all(_meets(key, metrics[key], limit) for key, limit in limits.items())
    metrics.update(threshold=limits, passed=bool(passed))
    return passed


def failure(fmt, metrics):
    """A ValidationError describing why ``fmt`` failed."""
    missed = [f"{key}={metrics[key]:.4g} does not meet {'<=' if key.endswith('_error') else '>='} {limit:g}"
              for key, limit in metrics["threshold"].items() if not _meets(key, metrics[key], limit)]
    return ValidationError(f"{fmt}: {', '.join(missed)} on {metrics['n']} held-out images")
