"""`load_model`: `keras.saving.load_model` with the CoAtNet layers registered, on any backend."""

import os

import keras

from keras_coatnet import layers  # noqa: F401 - registers the layers for deserialization


def load_model(path, custom_objects=None, compile=True, safe_mode=True):
    """Loads a `.keras` file saved from a keras_coatnet model (any backend) like `keras.saving.load_model`."""
    return keras.saving.load_model(os.fspath(path), custom_objects=custom_objects, compile=compile,
                                   safe_mode=safe_mode)
