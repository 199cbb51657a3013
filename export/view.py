"""The export view: the model's forward pass with each block replaced by its export form (`export_call`, beside
the block's `call` in keras_coatnet/layers; shared pieces in `keras_coatnet.layers.export_form`).

Same architecture and trained weights, different graph (static shapes, batch 1): norms, layer scales and
1/sqrt(d) folded into convs and matmuls, Transformer blocks on 2-D tokens, 2x2 average pools as depthwise convs,
and the relative bias stored as a constant or expanded at run time from its table. The head's LayerNorm is
`export_form.layer_norm`; layers without an export form run unchanged. `Options` picks the forms; "auto" picks
them per export format. `export_model` checks `forward(model)` against the Keras model.
"""

from keras import layers

from export._compat import run_through_graph
from keras_coatnet.layers import MBConvBlock, Stem, TransformerBlock
from keras_coatnet.layers.export_form import ATTENTION_MODES, GELU_MODES, REL_BIAS_MODES, ExportOptions, layer_norm

PER_HEAD_FORMATS = ("int8_full", "int16x8")  # integer attention matmuls: per-head FULLY_CONNECTED
CONSTANT_BIAS_FORMATS = (None, "saved_model", "fp32", "int8", "qat_int8")  # None: the float view itself
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
        formats per-head attention and the table (a smaller file)."""
        attention = self.attention
        if attention == "auto":
            attention = "per_head" if fmt in PER_HEAD_FORMATS else "batched"
        rel_bias = self.rel_bias
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
