"""Errors the export CLI reports as one line."""


class ExportError(ValueError):
    """A bad export request: unknown format, unusable model, bad input size, no calibration data."""


class ValidationError(RuntimeError):
    """An exported model disagrees with the Keras model beyond its format's threshold."""
