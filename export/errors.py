"""Errors the export CLI reports as one line."""


class ExportError(ValueError):
    """A bad export request: unknown format, unusable model, bad input size, no calibration data."""

    exit_code = 2


class ValidationError(RuntimeError):
    """An exported model disagrees with the Keras model beyond its format's threshold."""

    exit_code = 1
    cli_label = "validation failed"
