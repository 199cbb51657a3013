"""Export a trained keras_coatnet model to SavedModel and validated TFLite (fp32, fp16, int8, int16x8).

    from export import export_model
    report = export_model("model.keras", "out/", formats=["fp32", "int8"], calibration_source="digits")

CLI: ``python -m export model.keras out/ --formats fp32,int8 --calibration digits`` (see the Export section of README.md).
The names below are imported on first use, so ``export.artifacts`` and ``export.artifacts`` load without TensorFlow.
"""

import importlib

_LAZY = {"export_model": "export.api", "ExportError": "export.errors", "ValidationError": "export.errors",
         "FORMATS": "export.formats", "DEFAULT_FORMATS": "export.formats"}

__all__ = ["export_model", "ExportError", "ValidationError", "FORMATS", "DEFAULT_FORMATS"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
