"""Training callbacks: NaN/Inf guard, best/last .keras checkpoints, loss/accuracy curves PNG."""
import csv
import json
import math
import os

import keras

from keras_coatnet.atomic import atomic_path, write_text


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or Inf; the last good checkpoints are kept."""

    exit_code = 3


class StopOnNonFinite(keras.callbacks.Callback):
    """Abort fit (by raising TrainingDiverged) on the first batch whose loss is NaN/Inf.

    Raising inside fit skips every later on_epoch_end/on_train_end, so no checkpoint or backup is
    written from the diverged weights.
    """

    def __init__(self, checkpoint_hint=""):
        super().__init__()
        self.checkpoint_hint = checkpoint_hint
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"training loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}; "
                f"stopped. {self.checkpoint_hint}")


class Checkpoints(keras.callbacks.Callback):
    """Save `last.keras` every epoch and `best.keras` when `monitor` improves.

    The best value so far lives in best.json, so a resumed run keeps comparing against it.
    Writes only when `enabled` (the chief in multi-worker runs).
    """

    def __init__(self, directory, monitor="val_loss", mode="min", enabled=True):
        super().__init__()
        self.directory, self.monitor, self.mode, self.enabled = directory, monitor, mode, enabled
        self.last_path = os.path.join(directory, "last.keras")
        self.best_path = os.path.join(directory, "best.keras")
        self.state_path = os.path.join(directory, "best.json")

    def best(self):
        """{'epoch', 'monitor', 'value'} of the best epoch so far, or None."""
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                return json.load(f)
        return None

    def is_better(self, value, best):
        return best is None or (value < best["value"] if self.mode == "min" else value > best["value"])

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled:
            return
        logs = logs or {}
        with atomic_path(self.last_path) as tmp:
            self.model.save(tmp, include_optimizer=False)
        value = logs.get(self.monitor, logs.get(self.monitor.replace("val_", "")))
        if value is None or not math.isfinite(float(value)):
            return
        if self.is_better(float(value), self.best()):
            with atomic_path(self.best_path) as tmp:
                self.model.save(tmp, include_optimizer=False)
            write_text(self.state_path, json.dumps({"epoch": epoch + 1, "monitor": self.monitor, "value": float(value)}))


def read_history(csv_path):
    """History CSV (keras.callbacks.CSVLogger) as {column: [values]}, rows in file order."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))

    def number(v):
        try:
            return float(v)
        except (TypeError, ValueError):  # CSVLogger writes "NA" for a missing value
            return float("nan")

    return {k: [number(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def plot_curves(history, png_path):
    """Write a PNG with loss and accuracy per epoch (train and val) from a history dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(e) + 1 for e in history.get("epoch", [])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for name, style in ((key, "-"), ("val_" + key, "--")):
            if name in history:
                ax.plot(epochs, history[name], style, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
