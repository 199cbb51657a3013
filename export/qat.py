"""Quantization-aware fine-tuning with Keras 3's own fake-quant op (tfmot does not accept Keras 3 models).

The QAT model runs the trained model's graph with a ``FakeQuant`` layer (8-bit, learned min/max) on the
input of the network and on the output of every top-level layer but the activations and Transformer blocks
(see ``UNQUANTIZED_OUTPUTS``) and the last one (the logits), initialized from the observed ranges.
Fine-tuning trains the weights and the ranges together. The export then converts the fine-tuned graph *with*
its FakeQuant ops: the TFLite converter takes those tensors' int8 ranges from the learned min/max and
calibrates only the tensors in between.
"""

import keras
import numpy as np
from keras import layers

from export import graph
from export._compat import run_through_graph
from keras_coatnet.layers.transformer import TransformerBlock

# Layer classes whose outputs get no fake-quant (calibrated instead). The converter keeps a Transformer
# block's final residual ADD in float when a fake-quant sits on it (it does not merge the learned range with
# the calibrated one).
UNQUANTIZED_OUTPUTS = (layers.Activation, TransformerBlock)


@keras.saving.register_keras_serializable(package="keras_coatnet_export")
class FakeQuant(layers.Layer):
    """x -> fake_quant_with_min_max_vars(x, min, max, 8 bits), min/max trainable. Any shape."""

    def __init__(self, init_min=-6.0, init_max=6.0, **kwargs):
        super().__init__(**kwargs)
        self.init_min, self.init_max = float(init_min), float(init_max)

    def build(self, shape):
        self.min_var = self.add_weight(name="min", shape=(), initializer=keras.initializers.Constant(self.init_min))
        self.max_var = self.add_weight(name="max", shape=(), initializer=keras.initializers.Constant(self.init_max))

    def call(self, x):
        return keras.quantizers.fake_quant_with_min_max_vars(x, self.min_var, self.max_var, num_bits=8)

    def get_config(self):
        return {**super().get_config(), "init_min": self.init_min, "init_max": self.init_max}


def _ranges(model, images):
    """{layer name: (min, max)} of every top-level layer's output on ``images`` (model input convention)."""
    names = [l.name for l in model.layers[1:] if not isinstance(l, UNQUANTIZED_OUTPUTS)]
    # None on the logits either: with a fake-quant there the converter keeps the final SOFTMAX in int8 (its
    # float-island denylist does not apply), which XNNPACK does not take; they are calibrated instead.
    names = names[:-1]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = probe.predict(images, verbose=0, batch_size=32)
    out = {n: (float(min(o.min(), 0.0)), float(max(o.max(), 0.0))) for n, o in zip(names, outs)}
    out["__input__"] = (float(min(images.min(), 0.0)), float(max(images.max(), 0.0)))
    return out


def quantize_aware(model, images):
    """A keras.Model sharing ``model``'s layers, with FakeQuant on the input and after each top-level layer."""
    ranges = _ranges(model, images)
    quants = {name: FakeQuant(lo, hi, name=f"fq.{name}") for name, (lo, hi) in ranges.items()}

    def operation_fn(op):
        fq = quants.get(op.name)
        if fq is None:
            return op
        return lambda *args, **kwargs: fq(op(*args, **kwargs))

    inp = keras.Input(model.inputs[0].shape[1:], name="image")
    x = quants["__input__"](inp)
    out = run_through_graph(model, x, operation_fn)
    return keras.Model(inp, out, name=f"{model.name}_qat")


def quants_of(qat_model):
    """{quantized layer name or "__input__": FakeQuant} of a model from ``quantize_aware``."""
    return {l.name[len("fq."):]: l for l in qat_model.layers if isinstance(l, FakeQuant)}


def fine_tune(qat_model, images, labels, epochs=2, lr=1e-4, batch_size=32, progress=print):
    """Fine-tunes weights and ranges on (images, labels) with Adam; returns the History."""
    qat_model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    verbose = 2 if progress else 0
    return qat_model.fit(images, labels, epochs=epochs, batch_size=batch_size, verbose=verbose)


def export_qat(model, request, convention, samples, calib_in):
    """QAT fine-tunes ``model`` on digits, then converts it: returns (int8 .tflite bytes, the QAT Keras model).

    ``request``: the ``export.request.ExportRequest``; ``convention``: the model's input convention
    (``export.model_input``); ``samples``: the calibration samples (must come from digits); ``calib_in``: their
    calibration images [N, H, W, 3] as the exported input takes them."""
    import tempfile
    from pathlib import Path

    from export import calibration
    from export.errors import ExportError
    from export.formats import convert
    from export.graph import Serving
    from export.model_input import to_model_input
    from keras_coatnet.cli import SCRATCH_PREFIX

    if str(samples.source) != "digits":
        raise ExportError("qat_int8 needs labelled training images: use --calibration digits")
    if request.io_type == "uint8":
        raise ExportError("qat_int8 has int8 or float32 input / output (--io-type); uint8 is not available")
    size, epochs = request.input_size, request.qat_epochs
    x_train, y_train = calibration.digits_split(size[0], "train")
    x_model = to_model_input(np.round(x_train), convention)
    qat_model = quantize_aware(model, x_model[:256])
    request.log(f"[export] qat_int8: fine-tuning {epochs} epoch(s) on {len(x_model)} digits images")
    fine_tune(qat_model, x_model, y_train, epochs=epochs, progress=request.progress)
    after = {name: fq for name, fq in quants_of(qat_model).items() if name != "__input__"}
    fq_in = quants_of(qat_model)["__input__"]
    if request.optimize:
        inner = graph.forward(model, request.view_options("qat_int8"), after=after)
        fwd = lambda x: inner(fq_in(x))  # noqa: E731
    else:
        fwd = graph.keras_forward(qat_model)
    qat_serving = Serving(qat_model, fwd, size, request.uint8_input, convention)
    rep = calibration.representative(calib_in, request.input_dtype)
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX) as tmp:
        sm = qat_serving.write_saved_model(Path(tmp) / "sm")
        return convert(qat_serving.converter(sm), "qat_int8", rep, request.io_type), qat_model
