"""Export a trained keras_coatnet model to SavedModel and validated TFLite (fp32, fp16, int8, int16x8).

    from export import export_model
    report = export_model("model.keras", "out/", formats=["fp32", "int8"], calibration_source="digits")

CLI: ``python -m export model.keras out/ --formats fp32,int8 --calibration digits`` (see the Export section of README.md).
"""

from export.api import export_model
from export.errors import ExportError, ValidationError
from export.formats import DEFAULT_FORMATS, FORMATS

__all__ = ["export_model", "ExportError", "ValidationError", "FORMATS", "DEFAULT_FORMATS"]
