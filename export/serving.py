"""The serving function every export is converted from: fixed batch 1, fixed size, named signature.

Signature ``serving_default``: input ``image`` [1, H, W, 3] -> output ``probabilities`` [1, classes]
(or ``logits``/``features`` when the model ends without a softmax). With ``uint8_input`` the input is raw RGB
camera bytes (uint8) and any normalization the model expects is baked into the graph.
"""

import shutil
from pathlib import Path

import keras
import tensorflow as tf

from keras_coatnet.atomic import atomic_path

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"


def output_name(model):
    """"probabilities" if the model ends in a softmax, else "logits"."""
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return "probabilities" if getattr(act, "__name__", "") == "softmax" else "logits"


def model_takes_raw_pixels(model):
    """True if ``model`` normalizes inside (it takes 0-255 RGB), as keras_coatnet's include_preprocessing=True."""
    for layer in model.layers[:4]:
        name = type(layer).__name__.lower() + layer.name.lower()
        if any(k in name for k in ("rescaling", "normalization", "preprocess")) and "batch" not in name \
                and "layer_norm" not in name and "layernorm" not in name:
            return True
    return False


def _normalizer(model):
    """A function mapping 0-255 float RGB to the model's input convention."""
    if model_takes_raw_pixels(model):
        return lambda x: x
    from keras_coatnet import normalize_input

    return normalize_input


class Serving:
    """The tf.function to export: ``forward`` (float NHWC in the model's convention -> output) at a fixed size."""

    def __init__(self, model, forward, input_size, uint8_input=False):
        self.model, self.forward, self.input_size, self.uint8_input = model, forward, tuple(input_size), uint8_input
        self.output_name = output_name(model)
        dtype = tf.uint8 if uint8_input else tf.float32
        self.input_spec = tf.TensorSpec((1, *self.input_size, 3), dtype, name=INPUT_NAME)
        normalize = _normalizer(model) if uint8_input else None

        def serve(image):
            x = image
            if uint8_input:
                x = normalize(tf.cast(x, tf.float32))
            return {self.output_name: self.forward(x)}

        self.fn = serve

    def write_saved_model(self, path):
        """Writes a SavedModel with the ``serving_default`` signature to ``path`` atomically; returns path."""
        with atomic_path(path) as tmp:
            archive = keras.export.ExportArchive()
            # No archive.track(model): the endpoint captures the variables it uses, and tracking the model as
            # well stores every weight twice (keras-team/keras#23553, Keras 3.12-3.15): a 2x SavedModel.
            archive.add_endpoint(SIGNATURE_KEY, self.fn, input_signature=[self.input_spec])
            archive.write_out(str(tmp), verbose=False)
        return Path(path)

    def converter(self, saved_model_dir):
        """A TFLiteConverter reading ``serving_default`` of a SavedModel written by ``write_saved_model``."""
        return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE_KEY])


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)
