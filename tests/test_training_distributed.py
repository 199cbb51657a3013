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

# One set of initial weights for both runs.
init = {out!r} + "/init.keras"
keras_coatnet.create_model("coatnet_micro", input_shape=(32, 32, 3), classes=10).save(init)
out = {{}}
for strategy, batch in (("onedevice", 16), ("mirrored", 8)):
    rec = Recorder()
    cfg = dict({cfg!r}, strategy=strategy, batch_size=batch, weights=init, output_dir={out!r} + "/" + strategy)
    r = run(cfg, callbacks=[rec])
    out[strategy] = {{"losses": rec.losses, "replicas": r["replicas"], "global_batch": r["global_batch"],
                     "strategy": r["strategy"]}}
print(json.dumps(out))
"""


def _deterministic_config(out, **kw):
    # No random augmentation or stochastic depth, so both runs see the same batches and the same model.
    return tiny_config(out, rrc_scale=[1.0, 1.0], rrc_ratio=[1.0, 1.0], drop_path_rate=0.0, backup=False,
                       val_fraction=0.0, **kw)


def test_mirrored_two_cpus_matches_one_device(tmp_path):
    cfg = _deterministic_config(tmp_path, epochs=1, steps_per_epoch=8)
    rc, out, err = finish(start_python(MIRRORED.format(cfg=cfg, out=str(tmp_path))), timeout=900)
    assert rc == 0, err[-3000:]
    r = last_json_line(out)
    one, mirrored = r["onedevice"], r["mirrored"]
    assert (one["replicas"], mirrored["replicas"]) == (1, 2)
    assert one["global_batch"] == mirrored["global_batch"] == 16
    assert mirrored["strategy"] == "MirroredStrategy"
    a, b = np.array(one["losses"]), np.array(mirrored["losses"])
    assert len(a) == len(b) == 8
    # Same batches and initial weights; BatchNorm statistics are per replica (8 vs 16 images), so
    # the trajectories agree closely but not bit-exactly.
    np.testing.assert_allclose(b, a, rtol=0.03)
    assert a[-1] < a[0]


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
    cfg = tiny_config(tmp_path, strategy="multiworker", epochs=1, steps_per_epoch=3, batch_size=8)
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
