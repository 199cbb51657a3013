"""Agreement between an exported model and the Keras model on held-out images."""

import numpy as np

from export.errors import ValidationError
from export.formats import FORMATS


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


def threshold_for(fmt, overrides=None):
    """("max_rel_error", limit) or ("top1_agreement", minimum) for format ``fmt``."""
    spec = FORMATS[fmt]
    value = (overrides or {}).get(fmt)
    if spec.float_error is not None:
        return "max_rel_error", spec.float_error if value is None else value
    return "top1_agreement", spec.min_agreement if value is None else value


def check(fmt, metrics, overrides=None):
    """Adds ``passed``/``threshold`` to ``metrics``; returns True if the format meets its threshold."""
    key, limit = threshold_for(fmt, overrides)
    passed = metrics[key] <= limit if key == "max_rel_error" else metrics[key] >= limit
    metrics.update(threshold={key: limit}, passed=bool(passed))
    return passed


def failure(fmt, metrics):
    """A ValidationError describing why ``fmt`` failed."""
    (key, limit), = metrics["threshold"].items()
    op = "<=" if key == "max_rel_error" else ">="
    return ValidationError(f"{fmt}: {key}={metrics[key]:.4g} does not meet {op} {limit:g} "
                           f"on {metrics['n']} held-out images")
