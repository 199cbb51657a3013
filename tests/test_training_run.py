"""End-to-end digits training in-process: accuracy, artifacts, eval-only, fine-tuning, NaN stop."""
import csv
import json
import os

import keras
import numpy as np
import pytest

import keras_coatnet  # noqa: F401  (registers layers for load_model)
from tests.training_utils import tiny_config
from training.callbacks import TrainingDiverged
from training.train import run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A short from-scratch coatnet_micro run on digits (full epochs, batch 64)."""
    out = tmp_path_factory.mktemp("digits")
    return run({"preset": "digits", "output_dir": str(out), "epochs": 10, "verbose": 0})


def test_digits_short_run_reaches_90_percent(digits_run):
    r = digits_run
    assert r["status"] == "completed"
    assert r["test_images"] == 360
    assert r["test_top1"] >= 0.90, r
    assert r["test_top5"] >= r["test_top1"]
    assert r["optimizer_steps"] == 10 * r["steps_per_epoch"] == 10 * (1293 // 64)


def test_artifacts(digits_run):
    r = digits_run
    with open(r["history_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == list(range(10))
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "val_top5"} <= set(rows[0])
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    with open(r["curves_png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(r["metrics_json"]) as f:
        saved = json.load(f)
    assert saved["test_top1"] == r["test_top1"] and saved["best"]["epoch"] >= 1
    assert any(name.startswith("events") for _, _, files in os.walk(r["tensorboard_dir"]) for name in files)
    assert not os.path.exists(os.path.join(os.path.dirname(r["metrics_json"]), "backup"))  # removed when done
    for path in (r["best_model"], r["last_model"]):
        model = keras.models.load_model(path)
        assert model.output_shape == (None, 10)


def test_eval_only_matches_final_test_metrics(digits_run, tmp_path):
    r = run({"preset": "digits", "output_dir": str(tmp_path), "eval_only": True,
             "weights": digits_run["last_model"]})
    assert r["split"] == "test" and r["images"] == 360
    assert r["eval_top1"] == pytest.approx(digits_run["test_top1"], abs=1e-6)
    assert r["eval_top5"] == pytest.approx(digits_run["test_top5"], abs=1e-6)


def test_finetune_frozen_backbone_with_layer_decay(digits_run, tmp_path):
    r = run(tiny_config(tmp_path, weights=digits_run["last_model"], freeze_backbone=True, layer_decay=0.7,
                        epochs=1, steps_per_epoch=3, lr=1e-2))
    src = keras.models.load_model(digits_run["last_model"])
    dst = keras.models.load_model(r["last_model"])
    for layer in src.layers:
        if not layer.weights:
            continue
        a = layer.get_weights()
        b = dst.get_layer(layer.name).get_weights()
        same = all(np.array_equal(x, y) for x, y in zip(a, b))
        assert same == (not layer.name.startswith("head")), layer.name
    assert r["test_top1"] >= 0.8  # starts from the trained weights
    # The checkpoint reloads frozen, nested sub-layers included, with its optimizer state: fit() on it
    # goes on training the head only.
    assert dst.trainable_weights and all(w.path.startswith("head") for w in dst.trainable_weights)
    assert int(dst.optimizer.iterations) == r["optimizer_steps"] == 3


class _NaNWeightsAt(keras.callbacks.Callback):
    """Makes the first weight NaN before global step `step` (0-based): that step's loss is NaN."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen == self.step:
            w = self.model.trainable_weights[0]
            w.assign(np.full(w.shape, np.nan, "float32"))
        self.seen += 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, epochs=3, steps_per_epoch=3)
    with pytest.raises(TrainingDiverged, match="epoch 2, batch 2"):
        run(cfg, callbacks=[_NaNWeightsAt(4)])
    with open(tmp_path / "metrics.json") as f:
        m = json.load(f)
    assert m["status"] == "diverged" and "nan" in m["error"].lower()
    with open(tmp_path / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0]  # only the good epoch
    model = keras.models.load_model(tmp_path / "last.keras")
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert os.path.exists(tmp_path / "best.keras")
