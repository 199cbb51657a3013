"""Training callbacks: NaN/Inf guard, best/last .keras checkpoints, backup and preemption, loss/accuracy curves."""
import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
import signal
import threading

import keras

from keras_coatnet.atomic import atomic_path, write_text

log = logging.getLogger("training")
# (weights, metadata) of the latest backup, then of the previous one; Keras loads weights only from *.weights.h5.
BACKUP_PAIRS = (("latest.weights.h5", "training_metadata.json"), ("previous.weights.h5", "previous_metadata.json"))


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


class Preempted(RuntimeError):
    """SIGTERM reached a worker: every worker stopped at the same step boundary, after the backup of that step was
    written. Rerunning the same command resumes there."""

    exit_code = 42
    cli_label = "preempted"


@contextlib.contextmanager
def catch_sigterm(requested):
    """Within the block SIGTERM sets `requested` (a threading.Event) instead of ending the process (TensorFlow's
    coordination service, under MultiWorkerMirroredStrategy, would otherwise swallow it). Off the main thread
    signals cannot be caught: `requested` then never sets."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _backup_pairs(directory):
    """(weights path, metadata path) of the latest backup, then of the previous one."""
    return [(os.path.join(directory, w), os.path.join(directory, m)) for w, m in BACKUP_PAIRS]


def load_backup(model, directory):
    """Restore the newest readable backup in `directory` into `model` (weights, optimizer state); returns its
    (epoch, batch): `epoch` epochs and then `batch` batches done; (0, 0) when there is none.

    A pair counts only when its metadata exists: Backup writes the metadata last and removes it first."""
    for weights, meta in _backup_pairs(directory):
        if not (os.path.exists(weights) and os.path.exists(meta)):
            continue
        try:
            with open(meta) as f:
                position = json.load(f)
            model.load_weights(weights)
            return int(position["epoch"]), int(position.get("batch", 0))
        except (OSError, ValueError, KeyError) as e:
            log.warning("backup %s is unreadable: %s", weights, e)
    if any(os.path.exists(w) for w, _ in _backup_pairs(directory)):
        log.warning("no readable backup in %s: starting over", directory)
    return 0, 0


class Backup(keras.callbacks.Callback):
    """Back the training state (weights, optimizer state and step, EMA weights) up in `directory` (None: no
    backup): latest.weights.h5 and training_metadata.json {"epoch": E, "batch": B} (E epochs, then B batches,
    done), the previous pair (previous.*) kept until the new one is complete. Written at every epoch end and,
    once `sigterm` is set on any worker, at the next batch end, a step boundary the workers agree on
    (`agree(flag) -> bool`, true when any worker's flag is); then fit raises Preempted. Written only when
    `enabled` (the chief). `sigterm`: a threading.Event (see catch_sigterm).

    steps_per_epoch: fit's. resume_batch: batches of the first epoch done before a restart; that epoch ends
    after the rest of them (its logged train metrics average those only).
    Place it before SwapEMAWeights, so that the epoch-end backup holds the training weights, not the EMA."""

    def __init__(self, directory, sigterm, agree, steps_per_epoch, resume_batch=0, enabled=True):
        super().__init__()
        self.directory, self.sigterm, self.agree, self.enabled = directory, sigterm, agree, enabled
        self.steps, self.resume_batch = int(steps_per_epoch), int(resume_batch)
        self.epoch, self.offset, self.shortened = 0, 0, False

    def save(self, epoch, batch):
        if not self.enabled or self.directory is None:
            return
        os.makedirs(self.directory, exist_ok=True)
        (weights, meta), (old_weights, old_meta) = _backup_pairs(self.directory)
        if os.path.exists(weights) and os.path.exists(meta):
            shutil.copyfile(weights, old_weights)
            shutil.copyfile(meta, old_meta)
            os.remove(meta)  # until the new metadata is written, the previous pair is the backup
        self.model.save_weights(weights, overwrite=True)
        write_text(meta, json.dumps({"epoch": epoch, "batch": batch}))

    def _stop(self, epoch, batch):
        where = f"epoch {epoch + 1}, after batch {batch}" if batch else f"the start of epoch {epoch + 1}"
        if self.directory is None:
            raise Preempted(f"SIGTERM: stopped at {where}; no backup (--no-backup): a rerun starts over")
        raise Preempted(f"SIGTERM: stopped at {where}, backup in {self.directory}" + ("" if self.enabled else
                        " (on the chief)") + "; rerun the same command to resume there")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.offset, self.resume_batch = epoch, self.resume_batch, 0
        if self.agree(self.sigterm.is_set()):  # the backup on disk is this position (or the run is fresh)
            self._stop(epoch, self.offset)

    def on_train_batch_end(self, batch, logs=None):
        done = self.offset + batch + 1
        if done >= self.steps:  # the epoch's last batch: the epoch-end backup follows
            self.shortened = self.offset > 0
            self.model.stop_training = self.model.stop_training or self.shortened
            return
        if self.agree(self.sigterm.is_set()):
            self.save(self.epoch, done)
            self.agree(True)  # every worker waits here until the chief has written the backup
            self._stop(self.epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        if self.shortened:
            self.model.stop_training, self.shortened = False, False
        self.save(epoch + 1, 0)


class HistoryCSV(keras.callbacks.Callback):
    """history.csv as keras.callbacks.CSVLogger(path, append=True) writes it (epoch, then the logs' keys sorted;
    val_ columns of "NA" when there is no validation), rewritten whole through an atomic write at each epoch end:
    a full disk or a kill leaves the rows before, never a partial one. An existing file keeps its columns."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        text = ""
        if os.path.exists(self.path):
            with open(self.path, newline="") as f:
                text = f.read()
        header = next(csv.reader(text.splitlines()[:1]), None)
        rows = io.StringIO()
        writer = csv.writer(rows)
        if header:
            keys = header[1:]
        else:
            keys = sorted(logs)
            keys += [] if any(k.startswith("val_") for k in keys) else [f"val_{k}" for k in keys]
            writer.writerow(["epoch", *keys])
        writer.writerow([epoch, *(logs.get(k, "NA") for k in keys)])
        write_text(self.path, text + rows.getvalue())


def drop_history_from(csv_path, epoch):
    """Remove the rows of epochs >= `epoch` (0-based) from a history.csv (HistoryCSV): a run resumed at `epoch`
    logs them again."""
    if not os.path.exists(csv_path):
        return
    with open(csv_path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    rows = list(csv.DictReader(lines))
    kept = [line for line, row in zip(lines[1:], rows) if int(float(row["epoch"])) < epoch]
    if len(kept) < len(rows):
        write_text(csv_path, "".join(lines[:1] + kept))


def read_history(csv_path):
    """history.csv (HistoryCSV) as {column: [values]}, rows in file order."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))

    def number(v):
        try:
            return float(v)
        except (TypeError, ValueError):  # "NA" for a missing value
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
