"""Every private Keras API keras_coatnet uses, each behind one function that names the public API it stands in for,
and the Keras range these are tested with. tests/test_compat.py exercises each shim, so a new Keras release that
breaks one fails there by name. Nothing here patches Keras.
"""

import logging
import re

import keras

log = logging.getLogger("keras_coatnet")

# Tested Keras releases: >= TESTED_KERAS[0], < TESTED_KERAS[1] (major, minor); pyproject.toml pins the same range.
TESTED_KERAS = ((3, 15), (3, 16))
_warned = False


def _major_minor(version):
    return tuple(int(n) for n in re.findall(r"\d+", version)[:2])


def check_keras_version(version=None):
    """True when Keras `version` (default: the installed one) is in TESTED_KERAS; else logs one warning line,
    once per process, and returns False."""
    global _warned
    version = version or keras.version()
    (lo, hi), tested = TESTED_KERAS, TESTED_KERAS[0] <= _major_minor(version) < TESTED_KERAS[1]
    if not tested and not _warned:
        _warned = True
        log.warning("keras_coatnet is tested with keras>=%d.%d,<%d.%d, not Keras %s; if it fails, install the "
                    "tested range (pip install 'keras>=%d.%d,<%d.%d').", *lo, *hi, version, *lo, *hi)
    return tested


def compute_output_spec(fn, *args, **kwargs):
    """Runs `fn` on symbolic inputs (`keras.KerasTensor`s), which builds every layer it calls with the right
    shapes, and returns its output spec.

    Stands in for the public `keras.Layer.compute_output_spec`, which traces `call` only when the layer does not
    define `compute_output_shape` (our blocks define it, so it would build nothing)."""
    from keras.src.backend import compute_output_spec as trace

    return trace(fn, *args, **kwargs)


def sublayers(layer, recursive=False):
    """The layers `layer` tracks (its layer attributes, lists of layers included), in creation order, without
    `layer` itself; every descendant with `recursive`.

    Stands in for the public `keras.Model.layers`, which a plain `keras.Layer` does not have."""
    return list(layer._flatten_layers(include_self=False, recursive=recursive))
