"""Every private Keras API training/ uses, each behind one function that names the public API it stands in for.
tests/test_compat_export_training.py exercises each, so a Keras release that breaks one fails there by name.
The one patch of Keras here (the multi-worker log reduction) lasts only for the `with` block that needs it."""

import contextlib

from keras_coatnet._compat import sublayers  # noqa: F401 - the library's shim, re-used here


def prebuild(model, data_batch):
    """Creates ``model``'s optimizer and metric variables from ``data_batch`` (x, y) now, and makes fit /
    evaluate skip their own build from the first real batch.

    Stands in for a public "build for training" call: `model.build` makes the weights only, and
    `optimizer.build(variables)` the optimizer's variables but not the compiled metrics'."""
    model._symbolic_build(data_batch=data_batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def variable_index(optimizer, variable):
    """The index of ``variable`` in ``optimizer``'s built variable list (per-variable state lookups).

    Stands in for a public index lookup, which `keras.optimizers.Optimizer` does not have for subclasses'
    `update_step` (Keras's own optimizers use this method)."""
    return optimizer._get_variable_index(variable)


@contextlib.contextmanager
def multiworker_log_reduction(strategy):
    """Within the block, fit / evaluate under MultiWorkerMirroredStrategy reduce scalar logs with axis=None
    (their mean over all replicas); Keras 3.15 reduces them with axis=0, which fails across workers.
    Keras is restored when the block ends; other strategies are left alone.

    Stands in for a public per-strategy log reduction, which Keras does not have."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not tf_trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def mean(v):
            rank = strategy.experimental_local_results(v)[0].shape.rank
            return strategy.reduce("MEAN", v, axis=0 if rank else None)

        return tree.map_structure(mean, values)

    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original
