"""The class names written to ``labels.txt`` (one per line, line i = class index i)."""

from pathlib import Path

from export.errors import ExportError


def class_labels(num_classes, labels=None, calibration=None):
    """Class names: from a labels file / list, ImageNet names for 1000 / 11821 classes, digits names, or class_i."""
    if labels is not None:
        names = Path(labels).read_text().splitlines() if isinstance(labels, (str, Path)) else list(labels)
        names = [n.strip() for n in names if n.strip()]
        if len(names) != num_classes:
            raise ExportError(f"labels has {len(names)} names but the model has {num_classes} classes")
        return names
    if str(calibration) == "digits" and num_classes == 10:
        return [str(i) for i in range(10)]
    try:
        from keras_coatnet.preprocessing import class_names

        return [name for _, name in class_names(num_classes)]
    except (ImportError, ValueError):
        return [f"class_{i}" for i in range(num_classes)]
