"""Kill-and-resume: a run SIGKILLed mid-epoch restarts from its last epoch with the same optimizer state."""
import csv
import json

import pytest

from tests.training_utils import finish, last_json_line, start_python, tiny_config
from training.train import run

EPOCHS, STEPS = 3, 4

SCRIPT = """
import json, os, signal, sys
import keras
from training.train import run

cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {cfg!r}

class KillMidEpoch(keras.callbacks.Callback):
    # SIGKILL this process after batch 3 of epoch 2 (0-based: epoch 1, batch 2): no clean-up runs.
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

r = run(cfg, callbacks=[KillMidEpoch()] if {kill} else [])
print(json.dumps(r))
"""


def _history_epochs(path):
    with open(path) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_killed_run_resumes_without_losing_an_epoch(tmp_path):
    cfg = tiny_config(tmp_path / "resumed", epochs=EPOCHS, steps_per_epoch=STEPS)
    rc, out, err = finish(start_python(SCRIPT.format(cfg=cfg, kill=True)), timeout=900)
    assert rc == -9, err[-3000:]  # killed, mid-epoch 2
    with open(tmp_path / "resumed" / "backup" / "training_metadata.json") as f:
        assert json.load(f)["epoch"] == 1  # the backup holds the end of epoch 1
    assert _history_epochs(tmp_path / "resumed" / "history.csv") == [0]

    rc, out, err = finish(start_python(SCRIPT.format(cfg=cfg, kill=False)), timeout=900)
    assert rc == 0, err[-3000:]
    resumed = last_json_line(out)
    assert resumed["resumed_from_epoch"] == 1

    straight = run(tiny_config(tmp_path / "straight", epochs=EPOCHS, steps_per_epoch=STEPS))
    assert resumed["optimizer_steps"] == straight["optimizer_steps"] == EPOCHS * STEPS
    assert resumed["final_lr"] == pytest.approx(straight["final_lr"], rel=1e-6)  # same schedule position
    assert _history_epochs(resumed["history_csv"]) == list(range(EPOCHS))  # no lost or repeated epoch


def test_a_full_disk_during_the_backup_reads_as_one_line_and_the_rerun_resumes(tmp_path):
    """The first backup cut short by a full disk (a 20 KB file-size limit; the backup is ~750 KB): one line naming
    the file and 'File too large' (a non-zero exit). Rerun with space: no half-written backup breaks it (before,
    h5py's 'bad object header version number'), and it completes every epoch once."""
    import os
    import resource
    import subprocess
    import sys

    out = tmp_path / "run"
    args = [sys.executable, "-m", "training.train", "--preset", "digits", "--output-dir", str(out), "--epochs", "2",
            "--steps-per-epoch", "4", "--batch-size", "16", "--verbose", "0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    full = subprocess.run(args, preexec_fn=limit, capture_output=True, text=True, timeout=600, env=env)
    errors = [line for line in full.stderr.splitlines() if line.startswith("train:")]
    # Not 2: after the line is printed, h5py crashes (SIGSEGV) freeing the file HDF5 could not flush. Noted, not ours.
    assert full.returncode != 0 and len(errors) == 1, full.stderr[-3000:]
    assert errors[0] == f"train: error: cannot write {out / 'backup' / 'latest.weights.h5'}: File too large"
    again = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _history_epochs(out / "history.csv") == [0, 1]
    assert json.loads((out / "metrics.json").read_text())["status"] == "completed"
