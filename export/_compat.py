"""Every private TensorFlow / LiteRT / Keras API export/ uses, each behind one function that names the public API
it stands in for. tests/test_compat_export_training.py exercises each, so a release that breaks one fails there
by name. Nothing here patches a library."""


def ops_details(interpreter):
    """[{op_name, inputs, outputs, ...}] of every node of a loaded LiteRT interpreter, delegate nodes included.

    Stands in for a public per-op listing, which LiteRT does not have (`get_tensor_details` lists tensors only)."""
    return interpreter._get_ops_details()


def run_through_graph(model, x, operation_fn):
    """Runs functional ``model``'s graph on ``x`` with each layer call replaced by ``operation_fn(layer)``.

    Stands in for re-building the model with `keras.models.clone_model(model, clone_function=...)` and calling
    it, which would copy every weight and could not change what a layer computes inside a traced function."""
    return model._run_through_graph(x, operation_fn=operation_fn)


def tflite_schema():
    """The TFLite flatbuffer schema's generated Python classes (`BufferT`, `MetadataT`, ...).

    Stands in for a public schema module, which TF does not export (`tf.lite.tools.flatbuffer_utils` returns
    and takes these objects but does not export their classes)."""
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated
