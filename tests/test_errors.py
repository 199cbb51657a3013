"""Bad input gets a clear error that says what was wrong and what is allowed."""

import json
import os

import keras
import numpy as np
import pytest

import keras_coatnet as kc

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "timm", "tiny_coatnet_0")


def micro(**kw):
    return kc.create_model("coatnet_micro", **kw)


@pytest.mark.parametrize("shape,match", [
    ((0, 32, 3), "at least 32"),
    ((31, 64, 3), "at least 32"),
    ((None, 20, 3), "at least 32"),
    ((64, 64.5, 3), "at least 32"),
    ((32, 32, 0), "channels >= 1"),
    ((32, 32, None), "channels >= 1"),
    ((224, 224), "\\(height, width, channels\\)"),
])
def test_bad_input_shape(shape, match):
    """Sizes of any H, W >= 32 (or None) and C >= 1 build (tests/test_run_time_size.py); the rest raise one line."""
    with pytest.raises(ValueError, match=match) as e:
        micro(input_shape=shape)
    assert "\n" not in str(e.value)


def test_input_shape_16_is_too_small():
    with pytest.raises(ValueError, match="at least 32"):
        micro(input_shape=(16, 16, 3))


@pytest.mark.parametrize("classes", [0, -3, 2.5, "10", True])
def test_bad_classes(classes):
    with pytest.raises(ValueError, match="classes must be an integer >= 1"):
        micro(input_shape=(32, 32, 3), classes=classes)


def test_bad_pooling():
    with pytest.raises(ValueError, match="pooling must be None, 'avg' or 'max'"):
        micro(input_shape=(32, 32, 3), include_top=False, pooling="mean")


def test_input_tensor_of_wrong_rank():
    with pytest.raises(ValueError, match="input_tensor must be 4-D"):
        micro(input_tensor=keras.Input((32, 3)))


def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match="Did you mean"):
        kc.create_model("coatnet_0_rw")


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        micro(input_shape=(32, 32, 3), weights=str(tmp_path / "nope.safetensors"))


def test_corrupt_safetensors_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    data = open(os.path.join(FIXTURE, "model.safetensors"), "rb").read()
    bad.write_bytes(data[: len(data) // 2])
    cfg = json.load(open(os.path.join(FIXTURE, "config.json")))["timm_cfg"]
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        kc.from_timm_config(cfg, input_shape=(64, 64, 3), classes=10, weights=str(bad))


def test_corrupt_keras_weights_file(tmp_path):
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match="Could not load Keras weights"):
        micro(input_shape=(32, 32, 3), weights=str(bad))


def test_unsupported_weights_suffix(tmp_path):
    other = tmp_path / "w.bin"
    other.write_bytes(b"\0")
    with pytest.raises(ValueError, match="Unsupported weights file"):
        kc.load_weights(micro(input_shape=(32, 32, 3)), str(other))


def test_mismatched_architecture_names_the_tensors():
    """tiny_coatnet_0's checkpoint into the coatnet_0_rw-shaped fixture model: a strict, named failure."""
    cfg = json.load(open(os.path.join(FIXTURE, "..", "tiny_coatnet_0_rw", "config.json")))["timm_cfg"]
    with pytest.raises(ValueError, match="do not match this architecture.*missing.*unexpected"):
        kc.from_timm_config(cfg, input_shape=(64, 64, 3), classes=10,
                            weights=os.path.join(FIXTURE, "model.safetensors"))


def test_wrong_tensor_shape_is_reported(tmp_path):
    from safetensors.numpy import load_file, save_file

    state = load_file(os.path.join(FIXTURE, "model.safetensors"))
    state["stem.conv2.weight"] = np.zeros((16, 16, 5, 5), "float32")
    path = tmp_path / "reshaped.safetensors"
    save_file(state, str(path))
    cfg = json.load(open(os.path.join(FIXTURE, "config.json")))["timm_cfg"]
    with pytest.raises(ValueError, match="wrong shape.*stem.conv2.weight"):
        kc.from_timm_config(cfg, input_shape=(64, 64, 3), classes=10, weights=str(path))


def test_unknown_timm_config_key():
    with pytest.raises(ValueError, match="Unknown config keys"):
        kc.from_timm_config({"embed_dims": (1, 2)}, input_shape=(64, 64, 3))


def test_unsupported_block_type():
    with pytest.raises(ValueError, match="Unsupported block_type='M'"):
        kc.from_timm_config({"block_type": ("C", "C", "T", "M")}, input_shape=(64, 64, 3))


def test_other_class_count_reinitializes_only_the_classifier(tmp_path, caplog):
    cfg = json.load(open(os.path.join(FIXTURE, "config.json")))["timm_cfg"]
    path = os.path.join(FIXTURE, "model.safetensors")
    ref = kc.from_timm_config(cfg, input_shape=(64, 64, 3), classes=10, weights=path)
    with caplog.at_level("WARNING", logger="keras_coatnet"):
        other = kc.from_timm_config(cfg, input_shape=(64, 64, 3), classes=4, weights=path)
    assert "keeping a new 4-class classifier" in caplog.text
    np.testing.assert_array_equal(ref.get_layer("head__pre_logits__fc").get_weights()[0],
                                  other.get_layer("head__pre_logits__fc").get_weights()[0])
    features = kc.from_timm_config(cfg, input_shape=(64, 64, 3), include_top=False, weights=path)
    np.testing.assert_array_equal(features.get_layer("stem").get_weights()[0], ref.get_layer("stem").get_weights()[0])


def _one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message and "\x1b" not in message, message
    return message


def test_global_channels_first_gives_one_clear_line():
    keras.config.set_image_data_format("channels_first")
    try:
        with pytest.raises(ValueError, match="channels_last") as excinfo:
            micro(input_shape=(32, 32, 3))
    finally:
        keras.config.set_image_data_format("channels_last")
    assert "set_image_data_format" in _one_line(excinfo)


def test_numpy_input_tensor_gives_one_clear_line():
    with pytest.raises(ValueError, match="input_tensor must be a Keras tensor") as excinfo:
        micro(input_tensor=np.zeros((1, 32, 32, 3), "float32"))
    assert "ndarray" in _one_line(excinfo)


def test_preprocess_input_data_format_must_be_known():
    with pytest.raises(ValueError, match="data_format") as excinfo:
        kc.preprocess_input(np.zeros((1, 32, 32, 3)), data_format="nhwc")
    _one_line(excinfo)


def test_normalize_input_unknown_weights_name():
    with pytest.raises(ValueError, match="coatnet_micro"):
        kc.normalize_input(np.zeros((1, 32, 32, 3)), "coatnet_micro", weights="imagenet")
