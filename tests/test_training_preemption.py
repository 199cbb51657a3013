"""Faults in a two-worker MultiWorkerMirroredStrategy run on loopback (127.0.0.1, free ports), through the CLI:
SIGTERM to one worker (preemption) and SIGKILL of one worker, each followed by a restart of the same command.

The data order is deterministic, so a resumed run must end with an uninterrupted run's weights: --deterministic
(ordered tf.data, deterministic ops), a shuffle seeded by --seed, no random augmentation (a crop of the whole
image: rrc scale and ratio 1, no flips, RandAugment or MixUp in the digits preset) and no stochastic depth; a
resumed run skips the batches trained on before the interruption.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.training_utils import REPO, free_ports, python_env

EPOCHS, STEPS = 3, 6
WORKERS = 2
CLUSTER_TIMEOUT_S = 240  # a whole cluster run; each takes ~30 s on 2 CPU cores
LOST_WORKER_EXIT_S = 60  # a survivor's exit after its peer's SIGKILL (TF's coordination heartbeat: 10 s)

# A worker: the trainer's CLI, with a callback that signals this process at the end of one batch.
WORKER = """
import os, signal, sys
import keras
import training.train as train

FAULT = {fault!r}  # None or (signal name, epoch, batch), 0-based

class Fault(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if FAULT and (self.epoch, batch) == tuple(FAULT[1:]):
            os.kill(os.getpid(), getattr(signal, FAULT[0]))

run = train.run
train.run = lambda cfg, callbacks=(): run(cfg, callbacks=[Fault()])
sys.exit(train.main(sys.argv[1:]))
"""


def _args(out):
    return ["--preset", "digits", "--strategy", "multiworker", "--output-dir", str(out), "--epochs", str(EPOCHS),
            "--steps-per-epoch", str(STEPS), "--batch-size", "8", "--deterministic", "--rrc-scale", "[1.0, 1.0]",
            "--rrc-ratio", "[1.0, 1.0]", "--drop-path-rate", "0", "--verbose", "0"]


def run_cluster(out, faults=(None, None)):
    """Run the two workers to their end; returns [(exit code, stderr text, seconds from start to exit)]. Both are
    killed if the cluster has not stopped within CLUSTER_TIMEOUT_S."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(WORKERS)]}
    logs = [open(f"{out}.worker{i}.log", "w+") for i in range(WORKERS)]
    procs = []
    try:
        for i in range(WORKERS):
            env = python_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER.format(fault=faults[i]), *_args(out)],
                                          cwd=REPO, env=env, stdout=logs[i], stderr=subprocess.STDOUT, text=True))
        start, ends = time.monotonic(), [None] * WORKERS
        while None in ends:
            for i, p in enumerate(procs):
                if ends[i] is None and p.poll() is not None:
                    ends[i] = time.monotonic() - start
            if time.monotonic() - start > CLUSTER_TIMEOUT_S:
                raise AssertionError(f"the cluster did not stop within {CLUSTER_TIMEOUT_S} s: exits {ends}")
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    results = []
    for i, log in enumerate(logs):
        log.seek(0)
        results.append((procs[i].returncode, log.read(), ends[i]))
        log.close()
    return results


def error_lines(text):
    return [line for line in text.splitlines() if line.startswith("train:")]


def history_epochs(out):
    with open(os.path.join(out, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def final_weights(out):
    """Every variable (BatchNorm statistics too) of the chief's last.keras."""
    import keras

    import keras_coatnet  # noqa: F401

    return keras.models.load_model(os.path.join(out, "last.keras"), compile=False).get_weights()


def assert_finished_like(out, reference, resumed_from):
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["status"] == "completed" and metrics["resumed_from_epoch"] == resumed_from
    assert metrics["optimizer_steps"] == EPOCHS * STEPS
    assert history_epochs(out) == list(range(EPOCHS))  # every epoch exactly once
    got, want = final_weights(out), final_weights(reference)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    results = run_cluster(out)
    assert [r[0] for r in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    return out


def test_sigterm_to_one_worker_saves_at_a_step_and_the_rerun_resumes_there(tmp_path, uninterrupted):
    out = tmp_path / "run"
    # SIGTERM to worker 1 at the end of epoch 2's second batch: both stop at the same step boundary.
    results = run_cluster(out, faults=(None, ("SIGTERM", 1, 1)))
    for code, text, _ in results:
        assert code == 42, text[-3000:]  # training.callbacks.Preempted.exit_code: "preempted, restart me"
        lines = error_lines(text)
        assert len(lines) == 1 and lines[0].startswith("train: preempted: "), text[-3000:]
        assert "rerun" in lines[0]
    with open(out / "backup" / "training_metadata.json") as f:
        assert json.load(f) == {"epoch": 1, "batch": 3}  # seen at batch 2's end, agreed there by both workers
    assert history_epochs(out) == [0]

    results = run_cluster(out)
    assert [r[0] for r in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert not (out / "backup").exists()
    assert_finished_like(out, uninterrupted, resumed_from=1)


def test_sigkill_of_one_worker_stops_the_other_with_one_line_and_the_rerun_resumes(tmp_path, uninterrupted):
    out = tmp_path / "run"
    results = run_cluster(out, faults=(None, ("SIGKILL", 1, 2)))
    (code0, text0, end0), (code1, _, end1) = results
    assert code1 == -signal.SIGKILL
    assert code0 == 75, text0[-3000:]  # training.train.WorkerLost.exit_code
    assert end0 - end1 < LOST_WORKER_EXIT_S
    lines = error_lines(text0)
    assert len(lines) == 1, text0[-3000:]
    assert "worker 1" in lines[0] and "{{" not in lines[0] and "restart" in lines[0], lines[0]
    with open(out / "backup" / "training_metadata.json") as f:
        assert json.load(f)["epoch"] == 1  # the end of epoch 1
    assert history_epochs(out) == [0]

    results = run_cluster(out)
    assert [r[0] for r in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert_finished_like(out, uninterrupted, resumed_from=1)



def _single_args(out):
    args = _args(out)
    args[args.index("multiworker")] = "onedevice"
    return args


def _single(out, fault=None):
    return subprocess.run([sys.executable, "-c", WORKER.format(fault=fault), *_single_args(out)], cwd=REPO,
                          env=python_env(), capture_output=True, text=True, timeout=CLUSTER_TIMEOUT_S)


def test_sigterm_to_a_single_process_run_saves_at_a_step_and_the_rerun_resumes_there(tmp_path):
    from training.config import parse_cli
    from training.train import run

    out = tmp_path / "run"
    interrupted = _single(out, fault=("SIGTERM", 0, 3))
    assert interrupted.returncode == 42, interrupted.stderr[-3000:]
    assert error_lines(interrupted.stderr) == [f"train: preempted: SIGTERM: stopped at epoch 1, after batch 5, "
                                               f"backup in {out / 'backup'}; rerun the same command to resume there"]
    with open(out / "backup" / "training_metadata.json") as f:
        assert json.load(f) == {"epoch": 0, "batch": 5}
    resumed = _single(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run(parse_cli(_single_args(tmp_path / "straight"))[0])  # uninterrupted, in this process
    assert_finished_like(out, tmp_path / "straight", resumed_from=0)


# TensorFlow's texts as they reach training.train.run (a survivor's, the late joiner's, a non-chief's).
HEARTBEATS = ("Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call last):\n"
              '  File "trainer.py", line 154, in multi_step_on_iterator\n\nCollective ops is aborted by: Error '
              "reported from /job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n"
              "/job:worker/replica:0/task:1\nThe tasks have crashed. Check the task logs for an earlier error.\n"
              "\t [[{{node CollectiveReduceV2}}]] [Op:__inference_multi_step_on_iterator_13838]")
SOCKET = ("{{function_node __wrapped__CollectiveBcastRecv_device_/job:worker/replica:0/task:0/device:CPU:0}} "
          "Collective ops is aborted by: Socket closed [Op:CollectiveBcastRecv]")
LEADER = ("Failed to send RPC to coordination service. Either the leader task was preempted/died/restarted "
          "unexpectedly or this task is experiencing network issues. [type.googleapis.com/tensorflow.DerivedStatus='']")


def test_tensorflow_errors_read_as_one_line_naming_the_lost_worker():
    import tensorflow as tf

    from training.train import _lost_worker, tf_error_text

    cfg = {"output_dir": "runs/c0"}
    lines = {k: str(_lost_worker(tf.errors.UnavailableError(None, None, text), cfg))
             for k, text in (("heartbeats", HEARTBEATS), ("socket", SOCKET), ("leader", LEADER))}
    assert lines["heartbeats"] == ("lost a worker of the cluster (worker 1 stopped sending heartbeats); restart every "
                                   "worker with the same command to resume from the chief's backup in runs/c0/backup")
    assert lines["socket"].startswith("lost a worker of the cluster (the connection to another worker failed: "
                                      "Socket closed); restart")  # task:0 in {{...}} is the op's own device
    assert "the chief (worker 0" in lines["leader"]
    assert all("\n" not in line and "{{" not in line and "[Op:" not in line for line in lines.values())
    assert _lost_worker(tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [8,10] vs. [8,11]"),
                        cfg) is None
    shapes = ("Graph execution error:\n\nDetected at node add defined at (most recent call last):\n  File \"a.py\", "
              "line 1\n\nIncompatible shapes: [8,10] vs. [8,11]\n\t [[{{node add}}]] [Op:__inference_train_function_1]")
    assert tf_error_text(tf.errors.InvalidArgumentError(None, None, shapes)) == "Incompatible shapes: [8,10] vs. [8,11]"


def test_a_backup_cut_short_falls_back_to_the_previous_one(tmp_path):
    """A kill or a full disk while the latest backup is written: its weights truncated (the metadata written
    last is then the previous step's until it is removed), or its metadata not yet written; the previous pair
    is restored instead."""
    import keras

    from training.callbacks import Backup, load_backup

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    backup = Backup(str(tmp_path), sigterm=None, agree=bool, steps_per_epoch=4)
    backup.set_model(model)
    first = [w.copy() for w in model.get_weights()]
    backup.save(1, 0)
    model.set_weights([w + 1 for w in first])
    backup.save(1, 2)
    assert load_backup(model, str(tmp_path)) == (1, 2)
    np.testing.assert_array_equal(model.get_weights()[0], first[0] + 1)

    weights = tmp_path / "latest.weights.h5"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    assert load_backup(model, str(tmp_path)) == (1, 0)
    np.testing.assert_array_equal(model.get_weights()[0], first[0])
    (tmp_path / "training_metadata.json").unlink()
    model.set_weights([w + 1 for w in first])
    assert load_backup(model, str(tmp_path)) == (1, 0)
    np.testing.assert_array_equal(model.get_weights()[0], first[0])
