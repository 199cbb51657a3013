"""The graph handed to the converter: the export view (the model with each block replaced by its export form) and the
serving signature / SavedModel around it (`Serving`)."""

from pathlib import Path

import keras
import tensorflow as tf
from keras import layers

from export._compat import run_through_graph
from export.errors import ExportError
from keras_coatnet.atomic import atomic_path
from keras_coatnet.layers import MBConvBlock, Stem, TransformerBlock
from keras_coatnet.layers.export_form import ATTENTION_MODES, GELU_MODES, REL_BIAS_MODES, ExportOptions, layer_norm

PER_HEAD_FORMATS = ("int8_full", "int16x8")  # integer attention matmuls: per-head FULLY_CONNECTED
CONSTANT_BIAS_FORMATS = (None, "saved_model", "fp32", "int8", "qat_int8", "int8_full")  # None: the float view
# The LiteRT Quantizer has no integer TILE / ABS / MINIMUM, which the run-time table expansion is made of.
CONSTANT_BIAS_ONLY_FORMATS = ("int8_full",)
# Exact classes: a subclass may change what `call` computes without changing `export_call`.
EXPORT_FORMS = (Stem, MBConvBlock, TransformerBlock)


class Options:
    """The export forms to build: ``gelu`` in GELU_MODES, ``attention`` in ("auto", *ATTENTION_MODES),
    ``rel_bias`` in ("auto", *REL_BIAS_MODES) (see `ExportOptions`)."""

    def __init__(self, gelu="exact", attention="auto", rel_bias="auto"):
        for value, allowed, what in ((gelu, GELU_MODES, "gelu"), (attention, ("auto", *ATTENTION_MODES), "attention"),
                                     (rel_bias, ("auto", *REL_BIAS_MODES), "rel_bias")):
            if value not in allowed:
                raise ValueError(f"unknown {what} mode {value!r}; allowed: {allowed}")
        self.gelu, self.attention, self.rel_bias = gelu, attention, rel_bias

    def resolve(self, fmt=None):
        """The `ExportOptions` for export format ``fmt`` (None: float): "auto" gives float formats and the CPU
        int8 formats (attention in float islands) batched attention and the constant bias, the integer-only
        formats per-head attention, int16x8 the table (a smaller file), int8_full the constant bias (its only
        choice: ``CONSTANT_BIAS_ONLY_FORMATS``)."""
        attention = self.attention
        if attention == "auto":
            attention = "per_head" if fmt in PER_HEAD_FORMATS else "batched"
        rel_bias = self.rel_bias
        if fmt in CONSTANT_BIAS_ONLY_FORMATS and rel_bias == "table":
            raise ExportError(f"{fmt} needs rel_bias 'constant' (the LiteRT Quantizer cannot quantize the TILE / ABS "
                              "/ MINIMUM of the 'table' expansion)")
        if rel_bias == "auto":
            rel_bias = "constant" if fmt in CONSTANT_BIAS_FORMATS else "table"
        return ExportOptions(self.gelu, attention, rel_bias)

    def as_dict(self):
        return {"gelu": self.gelu, "attention": self.attention, "rel_bias": self.rel_bias}


def export_form(layer, options):
    """A function x -> layer's output through its export form, or None for a layer that has none."""
    if type(layer) in EXPORT_FORMS:
        return lambda x, **kwargs: layer.export_call(x, options)
    if type(layer) is layers.LayerNormalization:
        return lambda x, **kwargs: layer_norm(layer, x)
    return None


def known_layers(model):
    """Names of the layers the view replaces by their export forms (the others run as they are)."""
    return [layer.name for layer in model.layers if export_form(layer, ExportOptions()) is not None]


def forward(model, options=None, after=None):
    """A function x [1, H, W, C] (the model's input convention) -> model output, via the export forms.

    ``options``: `Options` or `ExportOptions`; ``after`` maps layer names to functions applied to those layers'
    outputs (QAT's fake-quant)."""
    options = options or Options()
    options = options.resolve() if isinstance(options, Options) else options
    after = after or {}

    def operation_fn(op):
        run_op = export_form(op, options) or (lambda *args, **kwargs: op(*args, **kwargs))
        post = after.get(op.name)
        return run_op if post is None else (lambda *args, **kwargs: post(run_op(*args, **kwargs)))

    return lambda x: run_through_graph(model, x, operation_fn)


def keras_forward(model):
    """The plain Keras forward pass (no rewrites), for comparison."""
    return lambda x: model(x, training=False)


SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"


def output_name(model):
    """"probabilities" if the model ends in a softmax, else "logits"."""
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return "probabilities" if getattr(act, "__name__", "") == "softmax" else "logits"


class Serving:
    """The tf.function to export: ``forward`` (float NHWC in the model's convention -> output) at a fixed size."""

    def __init__(self, model, forward, input_size, uint8_input=False, convention=None):
        from export.model_input import input_convention

        self.model, self.forward, self.input_size, self.uint8_input = model, forward, tuple(input_size), uint8_input
        self.output_name = output_name(model)
        dtype = tf.uint8 if uint8_input else tf.float32
        self.input_spec = tf.TensorSpec((1, *self.input_size, 3), dtype, name=INPUT_NAME)
        if uint8_input:
            convention = convention or input_convention(model)
            if convention["normalized_inside"]:
                normalize = lambda x: x  # noqa: E731 - the model's own Normalize layer does it
            else:
                mean = tf.constant(convention["mean"], tf.float32)
                std = tf.constant(convention["std"], tf.float32)
                normalize = lambda x: (x / 255.0 - mean) / std  # noqa: E731

        def serve(image):
            x = image
            if uint8_input:
                x = normalize(tf.cast(x, tf.float32))
            return {self.output_name: self.forward(x)}

        self.fn = serve

    def write_saved_model(self, path):
        """Writes a SavedModel with the ``serving_default`` signature to ``path`` atomically; returns path."""
        with atomic_path(path) as tmp:
            archive = keras.export.ExportArchive()
            # No archive.track(model): the endpoint captures the variables it uses, and tracking the model as
            # well stores every weight twice (keras-team/keras#23553, Keras 3.12-3.15): a 2x SavedModel.
            archive.add_endpoint(SIGNATURE_KEY, self.fn, input_signature=[self.input_spec])
            archive.write_out(str(tmp), verbose=False)
        return Path(path)

    def converter(self, saved_model_dir):
        """A TFLiteConverter reading ``serving_default`` of a SavedModel written by ``write_saved_model``."""
        return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE_KEY])
