"""Each published checkpoint's tensor manifest (names and shapes of timm's state_dict, recorded in the weights
registry) against the manifest of the Keras model its registry entry builds.

The manifest derivation is first checked on real timm files: the tiny fixtures of those configs. Full-size
models take 5-25 s each to build on 2 CPU cores, so by default only the two smallest run;
KERAS_COATNET_FULL_TESTS=1 runs all 15 (4-6 minutes on 2 busy cores; all pass).
"""

import glob
import json
import math
import os

import pytest

import keras_coatnet as kc
from keras_coatnet import pretrained
from keras_coatnet.timm_weights import IGNORED_SUFFIXES

HERE = os.path.dirname(__file__)
PUBLISHED_CONFIGS = {w.model.rsplit("_", 1)[0] for w in pretrained.WEIGHTS.values()}  # e.g. coatnet_0_rw


def _fixtures():
    """Tiny timm fixtures shrunk from a config that has published weights (checkpoint at its own size)."""
    for path in sorted(glob.glob(os.path.join(HERE, "fixtures", "timm*", "*", "config.json"))):
        with open(path) as f:
            meta = json.load(f)
        if meta["like"] in PUBLISHED_CONFIGS and "load_size" not in meta:
            yield path


FIXTURES = list(_fixtures())
FULL = os.environ.get("KERAS_COATNET_FULL_TESTS") == "1"
DEFAULT_SUBSET = ("coatnet_nano_rw_224.sw_in1k", "coatnet_rmlp_nano_rw_224.sw_in1k")


def _weights_params(manifest):
    """Learned parameters of a manifest (BatchNorm running statistics are buffers in timm, not parameters)."""
    return sum(math.prod(s) for k, s in manifest.items() if not k.endswith(("running_mean", "running_var")))


def test_fixtures_of_published_configs_found():
    assert {os.path.basename(os.path.dirname(p)) for p in FIXTURES} >= {
        "tiny_coatnet_0_rw", "tiny_coatnet_bn_0_rw", "tiny_coatnet_nano_rw", "tiny_coatnet_rmlp_nano_rw"}


@pytest.mark.parametrize("config_path", FIXTURES, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_manifest_of_timm_fixture_files(config_path):
    """Our model's manifest, in timm layout, equals the header of the timm checkpoint it loads."""
    with open(config_path) as f:
        meta = json.load(f)
    model = kc.from_timm_config(meta["timm_cfg"], input_shape=(*meta["img_size"], 3), classes=meta["num_classes"])
    ours = pretrained.model_manifest(model)
    theirs = pretrained.read_header(os.path.join(os.path.dirname(config_path), "model.safetensors"))
    learned = {k: s for k, s in theirs.items() if not k.endswith(IGNORED_SUFFIXES)}
    assert sorted(ours) == sorted(learned)
    assert {k: pretrained._timm_shape(s) for k, s in ours.items()} == \
           {k: pretrained._timm_shape(s) for k, s in learned.items()}
    assert pretrained.manifest_digest(ours) == pretrained.manifest_digest(theirs)


def _entry_params():
    for name in sorted(pretrained.WEIGHTS):
        marks = [] if FULL or name in DEFAULT_SUBSET else [pytest.mark.slow, pytest.mark.skip(
            reason="full-size build; set KERAS_COATNET_FULL_TESTS=1")]
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_entry_params()))
def test_published_checkpoint_fits_its_architecture(name):
    """timm's manifest digest and parameter count for the checkpoint equal our model's."""
    entry = pretrained.WEIGHTS[name]
    model = kc.create_model(entry.model, classes=entry.classes, input_shape=(*entry.input_size, 3))
    manifest = pretrained.model_manifest(model)
    assert pretrained.manifest_digest(manifest) == entry.manifest_sha256
    assert _weights_params(manifest) == entry.params
    assert manifest["head.fc.weight"][0] == entry.classes


def test_registry_params_are_timm_results_table_values():
    """Parameter counts (from timm's models) round to timm's results table (millions, 2 decimals)."""
    table = {"coatnet_rmlp_2_rw_384.sw_in12k_ft_in1k": 73.88, "coatnet_2_rw_224.sw_in12k_ft_in1k": 73.87,
             "coatnet_rmlp_1_rw2_224.sw_in12k_ft_in1k": 41.72, "coatnet_1_rw_224.sw_in1k": 41.72,
             "coatnet_rmlp_1_rw_224.sw_in1k": 41.69, "coatnet_0_rw_224.sw_in1k": 27.44,
             "coatnet_bn_0_rw_224.sw_in1k": 27.44, "coatnet_rmlp_nano_rw_224.sw_in1k": 15.15,
             "coatnet_nano_rw_224.sw_in1k": 15.14}
    for name, millions in table.items():
        assert round(pretrained.WEIGHTS[name].params / 1e6, 2) == millions, name
