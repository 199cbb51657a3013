"""Agreement between an exported model and the Keras model on held-out images.

Top-1 agreement is judged by the Keras model's confidence. An image whose top-1 and top-2 logits lie within
NEAR_TIE_LOGITS of each other is a near-tie: any correct quantized file may flip it (its rounding moves a
difference of logits by up to about 1.7 on the test models), so near-ties are counted apart and held only to a
loose binomial bound (`near_tie_flip_limit`). On every other image (confident) a quantized file must agree at
its format's `min_agreement`. Whether a few images sit on a near-tie is chance of training and CPU; a file that
flips confident images is wrong.
"""

import math

import numpy as np

from export.errors import ValidationError
from export.formats import FORMATS

# A float file made with an approximate GELU (--gelu tanh / sigmoid) computes another function than the Keras
# model: it is held to its format's float bound against the approximated graph it was converted from, and to
# this agreement with the Keras model on confident images (the same minimum as the quantized formats).
APPROX_GELU_MIN_AGREEMENT = 0.98
# Top-1 minus top-2 logit (natural log of the probability ratio) under which an image is a near-tie.
NEAR_TIE_LOGITS = 4.0


def logit_margins(ref):
    """[N] top-1 minus top-2 logit of each row of Keras outputs ``ref`` [N, K] (K >= 2).

    Rows that are probabilities (non-negative, summing to 1: a softmax output) give the log of the ratio of the
    two largest probabilities, which is the difference of the logits; other rows are taken as logits."""
    ref = np.asarray(ref, np.float64)
    if ref.shape[-1] < 2:
        return np.full(len(ref), np.inf)
    if np.all(ref >= 0) and np.allclose(ref.sum(-1), 1.0, atol=1e-3):
        ref = np.log(np.maximum(ref, np.finfo(np.float64).tiny))
    top2 = np.sort(ref, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def near_tie_flip_limit(near_ties):
    """Most near-tie flips a correct file may have: a near-tie flips with probability at most 1/2, so the count
    is at most Binomial(n, 1/2); the limit is its mean + 4 standard deviations + 1 (exceeded by chance with
    probability below 1e-4), and vacuous for a handful of near-ties."""
    return int(near_ties / 2 + 2 * math.sqrt(near_ties) + 1)


def compare(ref, got, labels=None):
    """Metrics of outputs ``got`` [N, K] against Keras outputs ``ref`` [N, K] (and true ``labels`` [N]).

    ``confident_agreement``: top-1 agreement on the images that are no near-tie (1.0 when there are none);
    ``near_ties`` and ``near_tie_flips``: how many near-ties there are and how many of them the file flipped."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    diff = np.abs(ref - got)
    same = ref.argmax(-1) == got.argmax(-1)
    near = logit_margins(ref) <= NEAR_TIE_LOGITS
    out = {
        "n": int(len(ref)),
        "max_abs_error": float(diff.max()),
        "max_rel_error": float(diff.max() / max(np.abs(ref).max(), 1e-12)),
        "top1_agreement": float(np.mean(same)),
        "confident_agreement": float(np.mean(same[~near])) if (~near).any() else 1.0,
        "near_ties": int(near.sum()),
        "near_tie_flips": int((near & ~same).sum()),
    }
    if labels is not None:
        out["accuracy"] = float(np.mean(got.argmax(-1) == labels))
        out["keras_accuracy"] = float(np.mean(ref.argmax(-1) == labels))
    return out


def thresholds_for(fmt, overrides=None, approx_gelu=False):
    """{metric: limit} that format ``fmt`` must meet: errors (``*_error``) at most, agreement at least.

    Quantized formats: ``confident_agreement`` at least their `min_agreement` (and, checked with it, near-tie
    flips within `near_tie_flip_limit`). ``approx_gelu``: the float formats are bounded by
    ``graph_max_rel_error`` (vs the approximated graph) and by APPROX_GELU_MIN_AGREEMENT confident agreement."""
    spec = FORMATS[fmt]
    value = (overrides or {}).get(fmt)
    if spec.float_error is None:
        return {"confident_agreement": spec.min_agreement if value is None else value}
    limit = spec.float_error if value is None else value
    if approx_gelu:
        return {"graph_max_rel_error": limit, "confident_agreement": APPROX_GELU_MIN_AGREEMENT}
    return {"max_rel_error": limit}


def _limits(fmt, metrics, overrides=None, approx_gelu=False):
    limits = thresholds_for(fmt, overrides, approx_gelu)
    if "confident_agreement" in limits:
        limits["near_tie_flips"] = near_tie_flip_limit(metrics["near_ties"])
    return limits


def _meets(key, value, limit):
    return value <= limit if key.endswith(("_error", "_flips")) else value >= limit


def check(fmt, metrics, overrides=None, approx_gelu=False):
    """Adds ``passed``/``threshold`` to ``metrics``; returns True if the format meets every threshold."""
    limits = _limits(fmt, metrics, overrides, approx_gelu)
    passed = all(_meets(key, metrics[key], limit) for key, limit in limits.items())
    metrics.update(threshold=limits, passed=bool(passed))
    return passed


def failure(fmt, metrics):
    """A ValidationError describing why ``fmt`` failed."""
    missed = [f"{key}={metrics[key]:.4g} does not meet {'<=' if key.endswith(('_error', '_flips')) else '>='} "
              f"{limit:g}" for key, limit in metrics["threshold"].items() if not _meets(key, metrics[key], limit)]
    return ValidationError(f"{fmt}: {', '.join(missed)} on {metrics['n']} held-out images "
                           f"({metrics['near_ties']} near-ties)")
