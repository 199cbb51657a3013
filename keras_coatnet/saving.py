"""`load_model`: `keras.saving.load_model` for our `.keras` files, including ones written before the layer
names lost their dots (see `naming`), which Keras' PyTorch backend cannot re-create as they are."""

import json
import os
import shutil
import tempfile
import zipfile

import keras

from keras_coatnet.naming import keras_name


def _dotted_layer_names(config, found):
    """Collects the names with a '.' of the layers in a (possibly nested) serialized model config."""
    if isinstance(config, dict):
        if isinstance(config.get("layers"), list):
            found.update(l["name"] for l in config["layers"] if isinstance(l, dict) and "." in l.get("name", ""))
        for value in config.values():
            _dotted_layer_names(value, found)
    elif isinstance(config, list):
        for value in config:
            _dotted_layer_names(value, found)
    return found


def _renamed(config, names):
    """The config with every string equal to one of `names` (a layer name or a reference to it) renamed."""
    if isinstance(config, dict):
        return {k: _renamed(v, names) for k, v in config.items()}
    if isinstance(config, list):
        return [_renamed(v, names) for v in config]
    return keras_name(config) if isinstance(config, str) and config in names else config


def load_model(path, custom_objects=None, compile=True, safe_mode=True):
    """Loads a `.keras` file like `keras.saving.load_model`, on any backend; layer names with dots (files written by
    keras_coatnet 0.1.0) are renamed on the way in, the weights are unchanged."""
    path = os.fspath(path)
    kwargs = dict(custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        return keras.saving.load_model(path, **kwargs)
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
        names = _dotted_layer_names(config, set())
        if not names:
            return keras.saving.load_model(path, **kwargs)
        folder = tempfile.mkdtemp(prefix="keras_coatnet_")
        try:
            renamed = os.path.join(folder, os.path.basename(path))
            with zipfile.ZipFile(renamed, "w") as out:
                for item in z.infolist():
                    data = z.read(item.filename)
                    if item.filename == "config.json":
                        data = json.dumps(_renamed(config, names)).encode("utf-8")
                    out.writestr(item, data)
            return keras.saving.load_model(renamed, **kwargs)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
