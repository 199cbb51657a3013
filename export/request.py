"""The export options, stated once: ``ExportRequest``'s fields are ``export_model``'s keyword arguments and the
``python -m export`` flags (each field's metadata holds its help text and flag)."""

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from export.calibration import SEED
from export.errors import ExportError
from export.formats import FORMATS
from export.graph import Options
from keras_coatnet.layers.export_form import ATTENTION_MODES, GELU_MODES, REL_BIAS_MODES


def option(default, help, flag=None, **argparse_kwargs):
    """A field of ExportRequest: ``default``, its ``help`` text and, when it has one, its CLI ``flag`` (default:
    --name-with-dashes; "" for an option the CLI does not take) and extra argparse arguments."""
    return field(default=default, metadata={"help": help, "flag": flag, "argparse": argparse_kwargs})


def _threshold(item):
    """"FORMAT=NUMBER" -> (format, number)."""
    fmt, sep, value = item.partition("=")
    try:
        if sep:
            return fmt, float(value)
    except ValueError:
        pass
    raise ExportError(f"bad --threshold {item!r}; expected FORMAT=NUMBER")


@dataclass(frozen=True)
class ExportRequest:
    """What one export is asked for. Built by ``export_model(model, out_dir, **options)`` (options: these fields);
    ``export_model`` then fills ``formats`` (parsed), ``input_size`` (the (H, W) exported) and ``name``."""

    formats: Any = option(None, "export formats (names of export.formats.FORMATS, or 'all': every one but "
                          "qat_int8; default all); int8: for CPUs (XNNPACK), int8_full: integer only, for NPU / "
                          "DSP / Edge TPU", type=lambda s: [n for n in s.split(",") if n])
    calibration_source: Any = option(None, "calibration / validation images: digits, an image folder, a TFRecord "
                                     "or a training config (.yaml/.json); required for int8, int8_full, int16x8, "
                                     "qat_int8", flag="--calibration")
    input_size: Any = option(None, "H [W] (int or (H, W) from Python): multiples of 32; the model's size, or any "
                             "for a model built with input_shape=(None, None, 3) (default: the model's)",
                             type=int, nargs="+", metavar="N")
    uint8_input: bool = option(False, "the signature takes raw RGB camera bytes (uint8); normalization baked in",
                               action="store_true")
    io_type: str = option("int8", "input/output type of int8 / int8_full / qat_int8 models",
                          choices=("int8", "uint8", "float32"))
    num_calib: int = option(64, "calibration images, sampled across classes (at least 8)",
                            flag="--num-calibration", type=int)
    num_heldout: int = option(64, "held-out validation images, disjoint from calibration (at least 1)", type=int)
    optimize: bool = option(True, "convert the export view (each block's export form); off: the plain Keras graph",
                            flag="--no-optimize", action="store_false")
    gelu: str = option("exact", "GELU in the export view: exact, or the tanh / x*sigmoid(1.702x) approximations "
                       "(sigmoid: faster int8, changes outputs slightly)", choices=GELU_MODES)
    attention: str = option("auto", "attention matmuls: one batched matmul or per-head 2-D matmuls; auto picks "
                            "per format", choices=("auto", *ATTENTION_MODES))
    rel_bias: str = option("auto", "relative-position bias: expanded at run time from the small table (smaller "
                           "file) or stored expanded (fastest); auto picks per format",
                           choices=("auto", *REL_BIAS_MODES))
    labels: Any = option(None, "class names: a text file with one per line (or a list from Python)")
    strict: bool = option(True, "raise / exit 1 after writing the passing formats if a format fails validation; "
                          "off: write formats that fail validation and exit 0", flag="--no-strict",
                          action="store_false")
    thresholds: Optional[Mapping[str, float]] = option(
        None, "override a validation threshold, e.g. int8=0.95 (agreement) or fp16=0.02 (rel error)",
        flag="--threshold", action="append", metavar="FORMAT=VALUE")
    name: Optional[str] = option(None, "file name prefix (default: the model's name)")
    qat_epochs: int = option(2, "fine-tuning epochs of qat_int8", type=int)
    progress: Optional[Callable[[str], Any]] = option(print, "a function taking each progress line (None: quiet)",
                                                      flag="")
    input_mean: Any = option(None, "for a model without a Normalize layer (include_preprocessing=False): the "
                             "(R, G, B) mean its input was normalized with, 0-1 scale (timm CoAtNet 0.5 0.5 0.5; "
                             "ImageNet 0.485 0.456 0.406)", type=float, nargs=3, metavar=("R", "G", "B"))
    input_std: Any = option(None, "with input_mean: the std (timm CoAtNet 0.5 0.5 0.5; ImageNet 0.229 0.224 0.225)",
                            type=float, nargs=3, metavar=("R", "G", "B"))
    seed: int = option(SEED, "seed of the stratified calibration / held-out sampling", type=int)

    def __post_init__(self):
        if isinstance(self.thresholds, list):  # from the CLI: ["FORMAT=NUMBER", ...]
            object.__setattr__(self, "thresholds", dict(_threshold(item) for item in self.thresholds))
        if isinstance(self.input_size, list):  # from the CLI: [H] or [H, W]
            object.__setattr__(self, "input_size", tuple((self.input_size * 2)[:2]))

    @property
    def input_dtype(self):
        """Dtype of the exported input: "uint8" (raw RGB bytes) or "float32"."""
        return "uint8" if self.uint8_input else "float32"

    @property
    def calibrated_formats(self):
        """The requested formats that need calibration images."""
        return [f for f in self.formats if FORMATS[f].calibrated]

    def view_options(self, fmt=None):
        """The export view's options for format ``fmt`` ("auto" resolved; None: the float view)."""
        return Options(self.gelu, self.attention, self.rel_bias).resolve(fmt)

    def log(self, message):
        if self.progress:
            self.progress(message)


def cli_options():
    """[(flag, dest, default, help, argparse kwargs)] of the options the CLI takes, in field order."""
    out = []
    for f in dataclasses.fields(ExportRequest):
        flag = f.metadata["flag"]
        if flag != "":
            out.append((flag or "--" + f.name.replace("_", "-"), f.name, f.default, f.metadata["help"],
                        f.metadata["argparse"]))
    return out


def signature(first):
    """An inspect.Signature: the positional parameters ``first``, then every option as a keyword."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in first]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
               for f in dataclasses.fields(ExportRequest)]
    return inspect.Signature(params)
