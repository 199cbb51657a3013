"""Train / evaluate a keras_coatnet model with tf.distribute.

CLI:    python -m training.train --preset digits --output-dir runs/digits
Python: training.train.run({"preset": "digits", "output_dir": "runs/digits"}) -> dict
"""
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings

log = logging.getLogger("training")


def _paths(out):
    return {
        "best_model": os.path.join(out, "best.keras"),
        "last_model": os.path.join(out, "last.keras"),
        "history_csv": os.path.join(out, "history.csv"),
        "curves_png": os.path.join(out, "curves.png"),
        "metrics_json": os.path.join(out, "metrics.json"),
        "eval_json": os.path.join(out, "eval.json"),
        "labels_txt": os.path.join(out, "labels.txt"),
        "best_timm": os.path.join(out, "best_timm"),
        "config_json": os.path.join(out, "config.json"),
        "tensorboard_dir": os.path.join(out, "tensorboard"),
        "backup_dir": os.path.join(out, "backup"),
    }


def _precision_policy(setting, kind):
    """Keras dtype policy name: mixed_float16 on GPU, mixed_bfloat16 on TPU/CPU, or float32."""
    setting = str(setting).lower()
    on = setting == "true" or (setting == "auto" and kind in ("gpu", "tpu"))
    if not on:
        return "float32"
    return "mixed_float16" if kind == "gpu" else "mixed_bfloat16"


def _compile(model, cfg, optimizer, strategy_kind):
    import keras

    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=float(cfg["label_smoothing"])),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")],
        jit_compile=bool(cfg["jit_compile"]) or strategy_kind == "tpu",
    )


def _prebuild(model, global_batch, size, classes):
    """Create the model's optimizer and metric variables from a zero batch, before fit/evaluate.

    Keras 3.15 otherwise builds them from the first real batch: under the default strategy inside
    the first traced train step (which then traces twice), and under MultiWorkerMirroredStrategy by
    reducing a per-replica batch, which fails. Call inside strategy.scope(); later builds are skipped.
    """
    import numpy as np

    from training._compat import prebuild

    prebuild(model, (np.zeros((global_batch, size, size, 3), "float32"), np.zeros((global_batch, classes), "float32")))


def _evaluate(model, ds):
    """{'loss', 'top1', 'top5'} of model on a batched one-hot dataset."""
    r = model.evaluate(ds, verbose=0, return_dict=True)
    return {"loss": float(r["loss"]), "top1": float(r["accuracy"]), "top5": float(r["top5"])}


def _has_tensorboard():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        log.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return False
    return True


def _write_json(path, obj):
    from keras_coatnet.atomic import write_text

    write_text(path, json.dumps(obj, indent=2, sort_keys=True))


# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("verbose", "overwrite", "eval_only", "config", "preset")


def _check_output_dir(cfg, paths):
    """Refuse to overwrite a finished run, or to resume an unfinished one with other settings, unless
    --overwrite (which then drops the unfinished run's backup/). Raises ValueError (one line)."""
    out = cfg["output_dir"]
    if os.path.exists(paths["metrics_json"]) and not cfg["overwrite"]:
        with open(paths["metrics_json"]) as f:
            status = json.load(f).get("status")
        raise ValueError(f"--output-dir {out} holds a finished run (metrics.json status {status}); pass --overwrite "
                         "to replace it, or choose another --output-dir")
    from training.callbacks import BACKUP_PAIRS

    has_backup = any(os.path.exists(os.path.join(paths["backup_dir"], meta)) for _, meta in BACKUP_PAIRS)
    if not (cfg["backup"] and has_backup and os.path.exists(paths["config_json"])):
        return
    if cfg["overwrite"]:
        log.info("--overwrite: dropping the unfinished run's %s", paths["backup_dir"])
        shutil.rmtree(paths["backup_dir"])
        return
    with open(paths["config_json"]) as f:
        saved = json.load(f)
    now = json.loads(json.dumps(cfg))
    changed = [f"{k} {saved.get(k)!r} -> {now.get(k)!r}".replace("'", "") for k in sorted(set(saved) | set(now))
               if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)]
    if changed:
        raise ValueError(f"--output-dir {out} holds an unfinished run (backup/) with other settings: "
                         f"{'; '.join(changed)}. Resume with the same settings, or start fresh with --overwrite "
                         "(deletes its backup/) or another --output-dir")


def _eval_only(cfg, strategy, data, global_batch):
    import keras

    from training.data import pipeline
    from training.model import build_model

    split = data.test or data.val
    if split is None:
        raise ValueError("eval_only needs a test or validation split (--test-data / --val-data)")
    with strategy.scope():
        if str(cfg["weights"]).endswith(".keras"):
            model = keras.models.load_model(cfg["weights"], compile=False)
        else:
            model = build_model(cfg, data.num_classes)
        _compile(model, cfg, "adam", "cpu")
        _prebuild(model, global_batch, int(cfg["image_size"]), data.num_classes)
    result = _evaluate(model, pipeline(split, cfg, global_batch, data.num_classes, training=False))
    return {"status": "evaluated", "split": "test" if data.test else "val", "images": split.count,
            **{f"eval_{k}": v for k, v in result.items()}}


class WorkerLost(RuntimeError):
    """Under MultiWorkerMirroredStrategy another worker died or cannot be reached; restarting every worker with the
    same command resumes from the chief's backup."""

    exit_code = 75


class TensorFlowError(RuntimeError):
    """A TensorFlow error, its cause on one line (the original is its __cause__)."""

    exit_code = 2


_TF_NOISE = re.compile(r"\{\{[^}]*\}\}|\[\[[^]]*\]\]|\[Op:[^]]*\]|\[type\.googleapis\.com[^]]*\]|"
                       r"Graph execution error:")


def tf_error_text(exc):
    """The cause in a tf.errors.OpError's text on one line, without TF's node, op and traceback annotations."""
    text = exc.message if hasattr(exc, "message") else str(exc)
    text = text.split("\n\n")[-1] if "Detected at node" in text else text  # the cause follows the node's traceback
    return " ".join(_TF_NOISE.sub(" ", text).split()) or type(exc).__name__


def _lost_worker(exc, cfg):
    """WorkerLost naming the worker and the backup, for a multi-worker collective or coordination error, else
    None."""
    text = re.sub(r"\{\{[^}]*\}\}", " ", str(exc))  # {{function_node ... /task:0/...}} names this worker's op
    if not re.search(r"[Cc]ollective|[Cc]oordination|heartbeat|Socket closed|Connection reset|unhealthy", text):
        return None
    gone = text.find("stopped sending heartbeats")
    task = re.search(r"/job:(worker|chief)(?:/replica:\d+)?/task:(\d+)", text[gone:] if gone >= 0 else text)
    who = f"{task.group(1)} {task.group(2)}" if task else "another worker"
    if gone >= 0:
        why = f"{who} stopped sending heartbeats"
    elif "coordination service" in text:
        why = "the chief (worker 0, which runs TensorFlow's coordination service) cannot be reached"
    else:
        cause = tf_error_text(exc).replace("Collective ops is aborted by: ", "").split(" Additional GRPC error")[0]
        why = f"the connection to {who} failed: {cause[:200]}"
    return WorkerLost(f"lost a worker of the cluster ({why}); restart every worker with the same command to resume "
                      f"from the chief's backup in {os.path.join(cfg['output_dir'], 'backup')}")


def _save_timm(paths, class_names):
    """best.keras as a timm checkpoint folder (keras_coatnet.save_timm_checkpoint); returns its path."""
    import keras

    import keras_coatnet

    best = keras.models.load_model(paths["best_model"], compile=False)
    keras_coatnet.save_timm_checkpoint(best, paths["best_timm"], label_names=class_names or None)
    log.info("timm checkpoint: %s (timm.create_model('local-dir:%s', pretrained=True))", paths["best_timm"],
             paths["best_timm"])
    return paths["best_timm"]


def run(config=None, callbacks=()):
    """Train (or evaluate) as configured; return a dict of results and output paths.

    config: dict of options (see training/config.py SPEC), may name a "preset" or "config" file.
    callbacks: extra keras callbacks appended to fit's (tests use this).
    Returns metrics (test_top1/test_top5 when there is a test split, best epoch, optimizer steps,
    timings) plus paths: best_model, last_model, history_csv, curves_png, metrics_json, ...
    Raises TrainingDiverged on a NaN/Inf loss (best/last checkpoints are kept); Preempted after SIGTERM (the
    backup holds the step it stopped at); WorkerLost when a multi-worker peer is gone; TensorFlowError for
    another TensorFlow error.
    """
    from training import config as config_lib

    cfg = config_lib.resolve(config)
    import tensorflow as tf

    with contextlib.ExitStack() as restore:
        try:
            return _run(cfg, callbacks, restore)
        except tf.errors.OpError as e:
            lost = _lost_worker(e, cfg) if cfg["strategy"] == "multiworker" else None
            raise lost or TensorFlowError(f"TensorFlow {type(e).__name__}: {tf_error_text(e)}") from e


@dataclasses.dataclass
class _Setup:
    """What the steps of one run share: its config, strategy, this worker's output folder and the batch."""

    cfg: dict
    strategy: object
    kind: str  # device kind: "cpu", "gpu" or "tpu"
    chief: bool
    out: str  # this worker's output folder (the chief's: cfg["output_dir"])
    paths: dict  # _paths(out)
    replicas: int
    global_batch: int
    info: dict  # the run's description, the first keys of its results
    t_start: float = 0.0


def _run(cfg, callbacks, restore):
    """run()'s body; `restore` (an ExitStack) undoes its process-wide changes when run() ends."""
    setup = _set_up(cfg, restore)
    data = _load_data(setup, restore)
    if cfg["eval_only"]:
        return _run_eval_only(setup, data)
    steps = _steps_per_epoch(cfg, data, setup.global_batch)
    peak_lr, schedule = _learning_rate(setup, steps)
    model = _build_compiled_model(setup, data, schedule)
    position = _restore_backup(setup, model)
    train_ds, val_ds = _datasets(setup, data, steps, position)
    _prepare_output_dir(setup, data, position)
    cbs, checkpoints, sigterm = _fit_callbacks(setup, steps, position[1], val_ds is not None, callbacks)
    fit_s = _fit(setup, model, train_ds, val_ds, cbs, sigterm, checkpoints, steps, position[0])
    results, history = _training_results(setup, model, data, checkpoints, steps, position, fit_s, peak_lr, schedule)
    return _finish(setup, model, data, results, history)


def _set_up(cfg, restore):
    """The strategy (first: multi-worker collectives must be set up before other TF work), the checked output
    folder, the dtype policy and seeds (undone by `restore`)."""
    import tensorflow as tf

    from training.strategy import device_kind, make_strategy, strategy_name

    strategy = make_strategy(cfg["strategy"], cfg["tpu"])
    import keras

    import keras_coatnet  # noqa: F401  (registers the model's layers for load_model)

    warnings.filterwarnings("ignore", message=".*(ran out of data|`shuffle=True` was passed).*")
    kind = device_kind(strategy)
    chief, out, paths = _output_folder(cfg, strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = int(cfg["batch_size"]) * replicas
    policy = _precision_policy(cfg["mixed_precision"], kind)
    restore.callback(keras.config.set_dtype_policy, keras.config.dtype_policy())
    keras.utils.set_random_seed(int(cfg["seed"]))
    if cfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    log.info("strategy %s: %d replica(s) on %s, global batch %d, precision %s",
             strategy_name(strategy), replicas, kind, global_batch, policy)
    info = {"model": cfg["model"], "dataset": cfg["dataset"], "strategy": strategy_name(strategy),
            "device": kind, "replicas": replicas, "global_batch": global_batch, "precision": policy}
    return _Setup(cfg, strategy, kind, chief, out, paths, replicas, global_batch, info)


def _output_folder(cfg, strategy):
    """(chief?, this worker's output folder, its `_paths`): the chief writes to --output-dir, another worker to
    its .worker<task> folder inside. Checks that the folder is writable and (training) may be used."""
    from keras_coatnet.atomic import writable_folder
    from training.strategy import is_chief, task_id

    chief = is_chief(strategy)
    out = cfg["output_dir"] if chief else os.path.join(cfg["output_dir"], f".worker{task_id(strategy)}")
    paths = _paths(out)
    writable_folder(out)  # one line (exit 2) for a file, a folder under a file, or an unwritable one
    if not cfg["eval_only"]:
        _check_output_dir({**cfg, "output_dir": out}, paths)
    return chief, out, paths


def _load_data(setup, restore):
    """The data splits (training/data.py); starts the run's clock, then sets the dtype policy and the
    multi-worker log reduction (undone by `restore`)."""
    import keras

    from training._compat import multiworker_log_reduction
    from training.data import load_data

    setup.t_start = time.time()
    data = load_data(setup.cfg)
    setup.info["skipped_images"] = data.skipped
    keras.config.set_dtype_policy(setup.info["precision"])
    restore.enter_context(multiworker_log_reduction(setup.strategy))
    return data


def _run_eval_only(setup, data):
    """--eval-only: the results of evaluating the model, written to eval.json by the chief."""
    results = {**setup.info, **_eval_only(setup.cfg, setup.strategy, data, setup.global_batch),
               "metrics_json": setup.paths["eval_json"]}
    if setup.chief:
        _write_json(setup.paths["eval_json"], results)
    return results


def _steps_per_epoch(cfg, data, global_batch):
    """--steps-per-epoch, else the full global batches in the training split; ValueError if none."""
    steps = int(cfg["steps_per_epoch"] or data.train.count // global_batch)
    if steps < 1:
        raise ValueError(f"{data.train.count} training images are fewer than one global batch "
                         f"({global_batch}); lower batch_size")
    return steps


def _learning_rate(setup, steps):
    """(peak LR scaled to the global batch, the LR schedule over the whole run); logs them."""
    from training.optim import lr_schedule, scaled_lr

    cfg, global_batch = setup.cfg, setup.global_batch
    peak_lr = scaled_lr(float(cfg["lr"]), global_batch, int(cfg["lr_base_batch"]), cfg["lr_scaling"])
    log.info("global batch %d (batch_size %d x %d replica(s)), peak LR %.3g (lr %g at lr_base_batch %d, "
             "%s scaling)", global_batch, int(cfg["batch_size"]), setup.replicas, peak_lr, float(cfg["lr"]),
             int(cfg["lr_base_batch"]), cfg["lr_scaling"])
    if peak_lr < 1e-5 and cfg["lr_scaling"] != "none":
        log.warning("peak LR %.3g is below 1e-05: --lr %g applies at --lr-base-batch %d and is scaled down to the "
                    "global batch %d; set --lr-base-batch %d (or raise --lr)", peak_lr, float(cfg["lr"]),
                    int(cfg["lr_base_batch"]), global_batch, global_batch)
    total_steps = steps * int(cfg["epochs"])
    schedule = lr_schedule(peak_lr, total_steps, float(cfg["warmup_epochs"]) * steps, float(cfg["min_lr_ratio"]))
    return peak_lr, schedule


def _build_compiled_model(setup, data, schedule):
    """The model, compiled with its optimizer and with its variables built, under the strategy's scope."""
    from training.model import build_model
    from training.optim import make_optimizer

    cfg = setup.cfg
    with setup.strategy.scope():
        model = build_model(cfg, data.num_classes)
        _compile(model, cfg, make_optimizer(model, cfg, schedule), setup.kind)
        _prebuild(model, setup.global_batch, int(cfg["image_size"]), data.num_classes)
    return model


def _restore_backup(setup, model):
    """(epoch, batch) to resume at: the chief's backup restored into `model` on every worker, else (0, 0)."""
    from training.callbacks import load_backup

    # Only the chief keeps a backup; every worker resumes from it.
    position = load_backup(model, setup.paths["backup_dir"]) if setup.cfg["backup"] and setup.chief else (0, 0)
    position = _share_chief_state(setup.strategy, model, position)
    if position != (0, 0):
        log.info("resuming from the backup at epoch %d, batch %d", position[0] + 1, position[1])
    return position


def _datasets(setup, data, steps, position):
    """(train, validation or None) pipelines; a deterministic resumed run skips the batches already trained on, so
    that it sees the same batches as an uninterrupted run."""
    from training.data import pipeline

    cfg, global_batch = setup.cfg, setup.global_batch
    train_ds = pipeline(data.train, cfg, global_batch, data.num_classes, True)
    if position != (0, 0) and cfg["deterministic"]:
        resumed_epoch, resumed_batch = position
        train_ds = train_ds.skip(resumed_epoch * steps + resumed_batch)
    val_ds = pipeline(data.val, cfg, global_batch, data.num_classes, False) if data.val else None
    return train_ds, val_ds


def _prepare_output_dir(setup, data, position):
    """Drops what an earlier run left in the output folder (for a resumed run, only the history rows logged after
    its backup at `position`), then writes config.json and (the chief) labels.txt."""
    from keras_coatnet.atomic import write_text
    from training.callbacks import drop_history_from

    paths = setup.paths
    if setup.chief and position != (0, 0):
        drop_history_from(paths["history_csv"], position[0])  # rows logged after the backup was written
    elif setup.chief:  # a fresh run: drop history and best-so-far of any earlier run in this directory
        for p in (paths["history_csv"], os.path.join(setup.out, "best.json")):
            if os.path.exists(p):
                os.remove(p)
        shutil.rmtree(paths["tensorboard_dir"], ignore_errors=True)
    _write_json(paths["config_json"], setup.cfg)
    if setup.chief and data.class_names:
        write_text(paths["labels_txt"], "".join(f"{name}\n" for name in data.class_names))  # class-index order


def _fit_callbacks(setup, steps, resumed_batch, has_val, extra):
    """(fit's callbacks then `extra`, their Checkpoints, the SIGTERM event their Backup watches)."""
    import keras

    from training.callbacks import Backup, Checkpoints, HistoryCSV, StopOnNonFinite
    from training.strategy import any_worker

    cfg, paths = setup.cfg, setup.paths
    checkpoints = Checkpoints(setup.out, "val_loss" if has_val else "loss", "min", enabled=setup.chief)
    # The backup at each epoch end follows the history row (a rerun drops rows past the backup) and precedes the
    # EMA swap (it holds the training weights). SIGTERM stops at a step boundary, with or without a backup.
    sigterm = threading.Event()
    cbs = [StopOnNonFinite(f"Last good checkpoint: {paths['last_model']}"),
           HistoryCSV(paths["history_csv"]),
           Backup(os.path.join(cfg["output_dir"], "backup") if cfg["backup"] else None,  # the chief's backup_dir
                  sigterm, any_worker(setup.strategy), steps, resumed_batch, enabled=setup.chief)]
    if cfg["use_ema"]:
        cbs.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    cbs.append(checkpoints)
    if _has_tensorboard():
        cbs.append(keras.callbacks.TensorBoard(paths["tensorboard_dir"], update_freq="epoch", profile_batch=0))
    cbs += list(extra)
    return cbs, checkpoints, sigterm


def _fit(setup, model, train_ds, val_ds, cbs, sigterm, checkpoints, steps, resumed_epoch):
    """model.fit, stopped at a step boundary by SIGTERM; returns its seconds. On a NaN/Inf loss the chief writes
    metrics.json (status diverged) and TrainingDiverged propagates."""
    from training.callbacks import TrainingDiverged, catch_sigterm

    cfg, paths = setup.cfg, setup.paths
    t_fit = time.time()
    try:
        with catch_sigterm(sigterm):
            model.fit(train_ds, epochs=int(cfg["epochs"]), initial_epoch=resumed_epoch, steps_per_epoch=steps,
                      validation_data=val_ds, callbacks=cbs, verbose=int(cfg["verbose"]))
    except TrainingDiverged as e:
        if setup.chief:
            _write_json(paths["metrics_json"], {**setup.info, "status": "diverged", "error": str(e),
                                                "best": checkpoints.best(), "last_model": paths["last_model"]})
        raise
    return time.time() - t_fit


def _training_results(setup, model, data, checkpoints, steps, position, fit_s, peak_lr, schedule):
    """The results of a completed fit: steps, LR, throughput, best epoch and the last history row."""
    from training.callbacks import read_history

    cfg, paths, (resumed_epoch, resumed_batch) = setup.cfg, setup.paths, position
    optimizer_steps = int(model.optimizer.iterations.numpy())
    history = read_history(paths["history_csv"]) if os.path.exists(paths["history_csv"]) else {}
    results = {
        **setup.info, "status": "completed",
        "epochs": int(cfg["epochs"]), "steps_per_epoch": steps, "optimizer_steps": optimizer_steps,
        "resumed_from_epoch": resumed_epoch, "resumed_from_batch": resumed_batch, "peak_lr": peak_lr,
        "final_lr": float(schedule(optimizer_steps)),
        "train_images": data.train.count, "fit_time_s": fit_s,
        "train_images_per_s": (optimizer_steps - resumed_epoch * steps - resumed_batch) * setup.global_batch / fit_s,
        "best": checkpoints.best(), "history_epochs": [int(e) for e in history.get("epoch", [])],
    }
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_top5"):
        if history.get(key):
            results[f"final_{key}"] = history[key][-1]
    return results, history


def _finish(setup, model, data, results, history):
    """Adds the test split's results and the output paths to `results`; the chief plots the curves, saves the timm
    checkpoint, writes metrics.json and only then drops the backup. Returns `results`."""
    from training.callbacks import plot_curves
    from training.data import pipeline

    cfg, paths = setup.cfg, setup.paths
    if data.test is not None:
        test = _evaluate(model, pipeline(data.test, cfg, setup.global_batch, data.num_classes, False))
        results.update({f"test_{k}": v for k, v in test.items()}, test_images=data.test.count)
    results["total_time_s"] = time.time() - setup.t_start
    if setup.chief and history:
        plot_curves(history, paths["curves_png"])
    results.update({k: paths[k] for k in ("best_model", "last_model", "history_csv", "curves_png",
                                           "metrics_json", "tensorboard_dir", "config_json")})
    if data.class_names:
        results["labels_txt"] = paths["labels_txt"]
    if setup.chief and cfg["save_timm"]:
        results["best_timm"] = _save_timm(paths, data.class_names)
    if setup.chief:
        _write_json(paths["metrics_json"], results)
        shutil.rmtree(paths["backup_dir"], ignore_errors=True)  # kept until now: a kill before resumes at the end
    return results



def _share_chief_state(strategy, model, position):
    """The chief's backup position (epoch, batch) on every worker and, when the chief restored a backup, its model
    and optimizer variables (all the same under MultiWorkerMirroredStrategy). Off multi-worker: `position`."""
    import tensorflow as tf

    from training.strategy import from_chief, is_multiworker

    if not is_multiworker(strategy):
        return position
    epoch, batch = (int(v) for v in from_chief(strategy, [tf.constant(position, tf.int64)])[0].numpy())
    if (epoch, batch) != (0, 0):
        variables = list(model.variables) + list(model.optimizer.variables)
        for variable, value in zip(variables, from_chief(strategy, [v.value for v in variables])):
            variable.assign(value)
    return epoch, batch


def _summary(results):
    keys = ("status", "epochs", "optimizer_steps", "final_val_accuracy", "test_top1", "test_top5",
            "eval_top1", "eval_top5", "total_time_s", "best_model", "metrics_json")
    return "\n".join(f"{k}: {results[k]}" for k in keys if k in results)


# What the `train` extra brings that keras-coatnet-train needs: {module: pip name}.
TRAIN_EXTRA = {"yaml": "pyyaml", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def main(argv=None):
    """CLI entry point (keras-coatnet-train). Errors are one line unless --debug (``keras_coatnet.cli``)."""
    from keras_coatnet.cli import run_main

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    code = run_main("train", _parse_cli, lambda cfg: print(_summary(run(cfg))), argv)
    if code == WorkerLost.exit_code:  # TensorFlow's exit would wait a minute or more for the lost worker
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _parse_cli(argv):
    """The resolved config of the command line; a missing ``train`` extra is a one-line error."""
    missing = [pip for module, pip in TRAIN_EXTRA.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} not installed; keras-coatnet-train needs the train extra: "
                         "pip install 'keras-coatnet[train]'")
    from training import config as config_lib

    return config_lib.parse_cli(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
