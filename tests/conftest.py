"""Test-wide settings: quiet TensorFlow, float32 policy, fixed seeds; the shared tiny model."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model():
    """The tests' tiny model (harness.build_tiny_model: coatnet_micro, 64x64, 10 classes, seeded), built once for
    the whole session. Read only: a test that compiles or trains it, or changes its weights or trainable flags,
    takes `fresh_tiny_model` instead."""
    from harness import build_tiny_model

    keras.mixed_precision.set_global_policy("float32")
    return build_tiny_model()


@pytest.fixture
def fresh_tiny_model(tiny_model):
    """A new copy of `tiny_model` (same architecture and weights) for a test that changes it."""
    from harness import build_tiny_model

    model = build_tiny_model()
    model.set_weights(tiny_model.get_weights())
    return model


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def _no_real_hub(monkeypatch, tmp_path):
    """The Hugging Face client never leaves the machine in tests: the Hub is a closed loopback port (tests that
    need one start `hub_server.HubServer`) and its cache a temporary folder."""
    from huggingface_hub import constants

    point_hub_client_at(monkeypatch, "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def point_hub_client_at(monkeypatch, url):
    """What HF_ENDPOINT=url does when set before `huggingface_hub` is imported."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
