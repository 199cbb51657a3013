"""The serving function every export is converted from: fixed batch 1, fixed size, named signature.

Signature ``serving_default``: input ``image`` [1, H, W, 3] -> output ``probabilities`` [1, classes]
(or ``logits``/``features`` when the model ends without a softmax). With ``uint8_input`` the input is raw RGB
camera bytes (uint8) and the normalization the model expects (``export.convention``) is baked into the graph.
"""

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


class Serving:
    """The tf.function to export: ``forward`` (float NHWC in the model's convention -> output) at a fixed size."""

    def __init__(self, model, forward, input_size, uint8_input=False, convention=None):
        from export.convention import input_convention

        self.model, self.forward, self.input_size, self.uint8_input = model, forward, tuple(input_size), uint8_input
        self.output_name = output_name(model)
        dtype = tf.uint8 if uint8_input else tf.float32
        self.input_spec = tf.TensorSpec((1, *self.input_size, 3), dtype, name=INPUT_NAME)
        if uint8_input:
            convention = convention or input_convention(model)
            if convention["normalized_inside"]:
                normalize = lambda x: x  # noqa: E731 - the model's own Normalize layer does it
            else:
                mean = tf.constant(convention["mean"], tf.float32)
                std = tf.constant(convention["std"], tf.float32)
                normalize = lambda x: (x / 255.0 - mean) / std  # noqa: E731

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
