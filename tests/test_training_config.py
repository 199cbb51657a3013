"""Config precedence, CLI flags, LR schedule, AdamW decay masks, layer-wise LR decay, strategy errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

import keras_coatnet
from tests.training_utils import REPO, python_env
from training import config as config_lib
from training.optim import layer_lr_multipliers, lr_schedule, make_optimizer, no_weight_decay, scaled_lr
from training.strategy import StrategyUnavailable, make_strategy
from training.train import _precision_policy


def test_precedence_defaults_preset_file_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: digits\nepochs: 7\nlr: 0.01\n")
    cfg, debug = config_lib.parse_cli(["--config", str(path), "--lr", "0.02", "--no-backup",
                                       "--rrc-scale", "[0.5, 1.0]", "--debug"])
    assert debug is True
    assert cfg["model"] == "coatnet_micro"  # from the preset
    assert cfg["epochs"] == 7  # file over preset
    assert cfg["lr"] == 0.02  # CLI over file
    assert cfg["backup"] is False and cfg["rrc_scale"] == [0.5, 1.0]
    assert cfg["weight_decay"] == config_lib.DEFAULTS["weight_decay"]
    jpath = tmp_path / "c.json"
    jpath.write_text(json.dumps({"epochs": 3}))
    assert config_lib.resolve({"batch_size": 4}, config_file=str(jpath))["epochs"] == 3


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        config_lib.resolve({"epoch": 3})
    with pytest.raises(ValueError, match="strategy"):
        config_lib.resolve({"strategy": "gpu"})
    with pytest.raises(ValueError, match="multiple of 32"):
        config_lib.resolve({"image_size": 100})
    with pytest.raises(ValueError, match="unknown preset"):
        config_lib.resolve({"preset": "imagenet22k"})
    with pytest.raises(FileNotFoundError):
        config_lib.resolve({"config": str(tmp_path / "none.yaml")})


def test_lr_scaling_and_schedule():
    assert scaled_lr(1e-3, 1024, 4096) == pytest.approx(2.5e-4)
    assert scaled_lr(1e-3, 1024, 4096, "sqrt") == pytest.approx(5e-4)
    s = lr_schedule(1e-3, total_steps=100, warmup_steps=10, min_lr_ratio=0.01)
    lrs = np.array([float(s(i)) for i in range(101)])
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == pytest.approx(1e-3)
    assert np.all(np.diff(lrs[:11]) > 0) and np.all(np.diff(lrs[10:]) <= 1e-12)
    assert lrs[55] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=1e-4)  # cosine midpoint
    assert lrs[100] == pytest.approx(1e-5)


def _micro():
    return keras_coatnet.create_model("coatnet_micro", input_shape=(32, 32, 3), classes=10)


def test_weight_decay_skips_norms_biases_and_rel_pos_tables():
    model = _micro()
    excluded = {v.path for v in model.trainable_variables if no_weight_decay(v)}
    assert any("relative_position_bias_table" in p for p in excluded)
    assert all(len(v.shape) >= 2 for v in model.trainable_variables if v.path not in excluded)
    assert any(p.endswith("gamma") for p in excluded) and any(p.endswith("bias") for p in excluded)

    cfg = config_lib.resolve({"weight_decay": 0.5, "clipnorm": None})
    opt = make_optimizer(model, cfg, 0.1)
    before = [v.numpy().copy() for v in model.trainable_variables]
    opt.apply_gradients([(np.zeros(v.shape, "float32"), v) for v in model.trainable_variables])
    for v, b in zip(model.trainable_variables, before):
        if v.path in excluded:  # zero gradient and no decay: unchanged
            np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
        else:  # decoupled decay only: w * (1 - lr * wd)
            np.testing.assert_allclose(v.numpy(), b * (1 - 0.1 * 0.5), rtol=1e-5, atol=1e-7, err_msg=v.path)


def test_layer_wise_lr_decay():
    model = _micro()
    mult = layer_lr_multipliers(model, 0.5)
    by_layer = {p.split("/")[0]: m for p, m in mult.items()}
    assert by_layer["head__fc"] == 1.0
    depth = len([n for n in by_layer if n.startswith("stages__")])
    assert by_layer["stem"] == pytest.approx(0.5 ** (depth + 1))
    assert by_layer["stages__0__blocks__0"] > by_layer["stem"]

    cfg = config_lib.resolve({"layer_decay": 0.5, "weight_decay": 0.0, "clipnorm": None})
    opt = make_optimizer(model, cfg, 0.01)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    opt.apply_gradients([(np.ones(v.shape, "float32"), v) for v in model.trainable_variables])
    for v in model.trainable_variables:  # Adam's first step moves every weight by about lr x multiplier
        step = np.abs(v.numpy() - before[v.path]).mean()
        assert step == pytest.approx(0.01 * mult[v.path], rel=1e-3), v.path


def test_precision_policy():
    assert _precision_policy("auto", "cpu") == "float32"
    assert _precision_policy("auto", "gpu") == "mixed_float16"
    assert _precision_policy("auto", "tpu") == "mixed_bfloat16"
    assert _precision_policy(True, "cpu") == "mixed_bfloat16"
    assert _precision_policy("false", "gpu") == "float32"


def test_unavailable_strategies_fail_at_once(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyUnavailable, match="no TPU found"):
        make_strategy("tpu")
    with pytest.raises(StrategyUnavailable, match="TF_CONFIG"):
        make_strategy("multiworker")
    with pytest.raises(StrategyUnavailable, match="no GPUs"):
        make_strategy("mirrored")


def test_cli_error_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "training.train", "--strategy", "tpu", "--preset", "digits"],
                          cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("train: error: --strategy tpu: no TPU found")
    assert "Traceback" not in proc.stderr
