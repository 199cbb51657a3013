"""tf.distribute on CPU: MirroredStrategy over 2 logical devices, MultiWorkerMirroredStrategy on loopback."""
import json

import numpy as np

from tests.training_utils import finish, free_ports, last_json_line, start_python, tiny_config

RECORDER = """
import json, sys
import keras, numpy as np

class Recorder(keras.callbacks.Callback):
    # Per-batch running-mean losses, and the final trainable weights' sums per variable
    # (BatchNorm moving statistics are per replica, so they differ between workers by design).
    def on_train_begin(self, logs=None):
        self.losses = []
    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))
    def on_train_end(self, logs=None):
        self.weights = [float(np.asarray(w, np.float64).sum()) for w in self.model.trainable_weights]
"""

MIRRORED = RECORDER + """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras_coatnet
from training.train import run

# One set of initial weights for all runs.
init = {out!r} + "/init.keras"
keras.utils.set_random_seed(0)
keras_coatnet.create_model("coatnet_micro", input_shape=(32, 32, 3), classes=10).save(init)
out = {{}}
for name, strategy, batch, sync in (("onedevice", "onedevice", 16, False), ("mirrored", "mirrored", 8, False),
                                    ("mirrored_sync", "mirrored", 8, True)):
    rec = Recorder()
    cfg = dict({cfg!r}, strategy=strategy, batch_size=batch, sync_batchnorm=sync, weights=init,
               output_dir={out!r} + "/" + name)
    r = run(cfg, callbacks=[rec])
    out[name] = {{"losses": rec.losses, "replicas": r["replicas"], "global_batch": r["global_batch"],
                 "strategy": r["strategy"]}}
print(json.dumps(out))
"""


def _deterministic_config(out, **kw):
    # No random augmentation or stochastic depth and a deterministic tf.data order, so every run
    # sees the same batches and the same model.
    return tiny_config(out, rrc_scale=[1.0, 1.0], rrc_ratio=[1.0, 1.0], drop_path_rate=0.0, backup=False,
                       val_fraction=0.0, deterministic=True, **kw)


def test_mirrored_two_cpus_matches_one_device(tmp_path):
    cfg = _deterministic_config(tmp_path, epochs=1, steps_per_epoch=8)
    rc, out, err = finish(start_python(MIRRORED.format(cfg=cfg, out=str(tmp_path))), timeout=900)
    assert rc == 0, err[-3000:]
    r = last_json_line(out)
    one, mirrored, synced = r["onedevice"], r["mirrored"], r["mirrored_sync"]
    assert (one["replicas"], mirrored["replicas"], synced["replicas"]) == (1, 2, 2)
    assert one["global_batch"] == mirrored["global_batch"] == synced["global_batch"] == 16
    assert mirrored["strategy"] == synced["strategy"] == "MirroredStrategy"
    a, b, c = (np.array(x["losses"]) for x in (one, mirrored, synced))
    assert len(a) == len(b) == len(c) == 8
    assert a[-1] < a[0]
    # Synchronized BatchNorm normalizes over the global batch as one device does: the first forward
    # pass and update agree up to summation order (per-replica statistics alone move step 0 by ~0.3%).
    # Later steps drift by up to ~0.4%: Adam's first steps are near sign(gradient), which turns
    # rounding differences in near-zero gradients into whole learning-rate steps.
    np.testing.assert_allclose(c[:2], a[:2], rtol=1e-4)
    np.testing.assert_allclose(c, a, rtol=0.02)
    # Per-replica BatchNorm statistics (8 images, not 16) move the losses by 0.3-2% (init-dependent).
    np.testing.assert_allclose(b, a, rtol=0.05)


WORKER = RECORDER + """
from training.train import run
rec = Recorder()
r = run({cfg!r}, callbacks=[rec])
print(json.dumps({{"weights": rec.weights, "replicas": r["replicas"], "steps": r["optimizer_steps"],
                  "strategy": r["strategy"]}}))
"""


def test_multiworker_two_processes_agree(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    # Synchronized BatchNorm adds cross-process all-reduces inside the forward pass, on top of the gradients'.
    cfg = tiny_config(tmp_path, strategy="multiworker", epochs=1, steps_per_epoch=3, batch_size=8,
                      sync_batchnorm=True)
    procs = [start_python(WORKER.format(cfg=cfg),
                          TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
             for i in range(2)]
    results = []
    for p in procs:
        rc, out, err = finish(p, timeout=900)
        assert rc == 0, err[-3000:]
        results.append(last_json_line(out))
    for r in results:
        assert r["strategy"] == "MultiWorkerMirroredStrategy" and r["replicas"] == 2 and r["steps"] == 3
    np.testing.assert_allclose(results[0]["weights"], results[1]["weights"], rtol=1e-6, atol=1e-6)
    assert (tmp_path / "last.keras").exists()  # the chief (worker 0) writes checkpoints
    assert not (tmp_path / ".worker1" / "last.keras").exists()
