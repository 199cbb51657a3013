"""``ExportRequest``: the options of one ``export_model`` call, resolved and frozen (see its docstring)."""

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from export.formats import FORMATS
from export.view import Options


@dataclass(frozen=True)
class ExportRequest:
    """What ``export_model`` was asked for, with ``formats`` parsed, ``input_size`` the (H, W) exported and
    ``name`` the model name to use (field meanings: ``export_model``'s Args)."""

    formats: tuple
    calibration_source: Any
    input_size: tuple
    uint8_input: bool
    io_type: str
    num_calib: int
    num_heldout: int
    optimize: bool
    gelu: str
    attention: str
    rel_bias: str
    labels: Any
    strict: bool
    thresholds: Optional[Mapping[str, float]]
    name: str
    qat_epochs: int
    progress: Optional[Callable[[str], Any]]
    input_mean: Any
    input_std: Any
    seed: int

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
