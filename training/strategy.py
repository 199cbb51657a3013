"""Pick a tf.distribute strategy, failing at once when the machine cannot provide it."""
import glob
import json
import os

import tensorflow as tf


class StrategyUnavailable(RuntimeError):
    """The requested strategy cannot run on this machine."""

    exit_code = 2


def _tpu_address(tpu):
    """The TPU to connect to: --tpu, $TPU_NAME, or 'local' on a TPU VM; None if none is visible."""
    if tpu:
        return tpu
    if os.environ.get("TPU_NAME"):
        return os.environ["TPU_NAME"]
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return "local"
    return None


def _tpu_strategy(tpu):
    address = _tpu_address(tpu)
    if address is None:
        raise StrategyUnavailable(
            "--strategy tpu: no TPU found (no --tpu address, no $TPU_NAME, not a TPU VM); "
            "pass --tpu grpc://HOST:8470 or a TPU name")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:  # noqa: BLE001 - any failure means: no usable TPU
        raise StrategyUnavailable(f"--strategy tpu: cannot connect to TPU {address!r}: {e}") from e
    return tf.distribute.TPUStrategy(resolver)


def _multiworker_strategy():
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    if not tf_config.get("cluster"):
        raise StrategyUnavailable(
            "--strategy multiworker needs TF_CONFIG with a 'cluster' and 'task', e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    return tf.distribute.MultiWorkerMirroredStrategy()


def _mirrored_devices():
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    cpus = tf.config.list_logical_devices("CPU")
    return [d.name for d in cpus] if len(cpus) > 1 else []


_MIRRORED = {}


def _mirrored(devices=None):
    """One MirroredStrategy per device set for the process: a second one over the same devices would
    restart the collective instance keys, and TF then matches its all-reduces with the first one's
    (an error such as "Shape mismatch in the collective instance 100" on a second run())."""
    key = tuple(devices or ())
    if key not in _MIRRORED:
        _MIRRORED[key] = tf.distribute.MirroredStrategy(devices)
    return _MIRRORED[key]


def make_strategy(name="auto", tpu=None):
    """Return a tf.distribute.Strategy for name in auto|onedevice|mirrored|multiworker|tpu.

    auto: TPU if one is found, else all GPUs mirrored (when >1), else one device.
    onedevice: the default strategy (first GPU, else CPU).
    mirrored: all GPUs, or all logical CPU devices when there are several (used by tests).
    """
    if name == "tpu" or (name == "auto" and _tpu_address(tpu)):
        return _tpu_strategy(tpu)
    if name == "multiworker":
        return _multiworker_strategy()
    if name == "mirrored":
        devices = _mirrored_devices()
        if not devices:
            raise StrategyUnavailable(
                "--strategy mirrored: no GPUs and only one CPU device; use --strategy onedevice")
        return _mirrored(devices)
    if name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
        return _mirrored()
    if name in ("auto", "onedevice"):
        # The default strategy runs on one device (the first GPU if any) without the per-step
        # overhead of OneDeviceStrategy's distributed iterator (about 3x on small CPU models).
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {name!r}; allowed: auto, onedevice, mirrored, multiworker, tpu")


def device_kind(strategy):
    """'tpu', 'gpu' or 'cpu': what the strategy's replicas run on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: the first GPU if there is one
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or ["CPU"]
    return "gpu" if any("GPU" in d.upper() for d in devices) else "cpu"


def is_chief(strategy):
    """True on the worker that writes checkpoints and logs (always True off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def task_id(strategy):
    """This worker's index (0 off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None else 0


def strategy_name(strategy):
    """Readable strategy name ('OneDevice' for the default strategy)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"  # the class is named CollectiveAllReduceStrategy
    name = type(strategy).__name__
    return "OneDevice" if name == "_DefaultDistributionStrategy" else name


def is_multiworker(strategy):
    """True under MultiWorkerMirroredStrategy."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def any_worker(strategy):
    """fn(flag: bool) -> bool, true when `flag` is true on any worker: one all-reduce of a scalar under
    MultiWorkerMirroredStrategy (every worker must call it the same number of times), `flag` itself otherwise."""
    if not is_multiworker(strategy):
        return bool

    @tf.function
    def total(x):
        return strategy.reduce("SUM", strategy.run(tf.identity, args=(x,)), axis=None)

    return lambda flag: float(total(tf.constant(float(flag)))) > 0


def from_chief(strategy, values):
    """Tensors (the same shapes and dtypes on every worker) -> the chief's values, on every worker: an all-reduce
    of the chief's values and zeros elsewhere under MultiWorkerMirroredStrategy; `values` otherwise."""
    if not is_multiworker(strategy) or not values:
        return list(values)

    def keep_replica_0(*xs):
        ctx = tf.distribute.get_replica_context()
        chief = tf.equal(ctx.replica_id_in_sync_group, 0)
        kept = [tf.where(chief, x, tf.zeros_like(x)) for x in xs]
        out = [None] * len(xs)
        for dtype in {x.dtype for x in xs}:  # one all-reduce per dtype: TF packs a group into one tensor
            group = [i for i, x in enumerate(xs) if x.dtype == dtype]
            for i, x in zip(group, ctx.all_reduce("SUM", [kept[i] for i in group])):
                out[i] = x
        return out

    summed = tf.function(lambda *xs: strategy.run(keep_replica_0, args=xs))(*values)
    return [strategy.experimental_local_results(x)[0] for x in summed]
