"""`keras.applications`-style constructors: CoAtNet0..CoAtNet7, `create_model(name)` and `from_timm_config`."""

import logging
import os

from keras_coatnet import timm_weights
from keras_coatnet.builder import TIMM_MEAN, TIMM_STD, build_model
from keras_coatnet.registry import get_entry

log = logging.getLogger("keras_coatnet")

WEIGHT_SUFFIXES = (".safetensors", ".weights.h5", ".h5", ".keras")


def load_weights(model, weights, include_top=True, classes=None):
    """Loads `weights` (a timm `.safetensors` or Keras `.weights.h5`/`.keras` file) into `model`.

    A timm checkpoint whose classifier does not fit (`include_top=False`, or another number of classes)
    loads everything else and keeps the new head as initialized, saying so in a log line."""
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file not found: {path!r} (expected a timm .safetensors or a Keras "
                                ".weights.h5 / .keras file, or a published weights name).")
    if not path.endswith(WEIGHT_SUFFIXES):
        raise ValueError(f"Unsupported weights file {path!r}; expected one of {WEIGHT_SUFFIXES}.")
    if path.endswith(".safetensors"):
        state = timm_weights.read_safetensors(path)
        fc = state.get("head.fc.weight")
        skip = () if include_top else ("head.",)
        if include_top and fc is not None and classes is not None and fc.shape[0] != classes:
            log.warning("Checkpoint %s has a %d-class head; keeping a new %d-class classifier (head.fc) "
                        "initialized at random.", path, fc.shape[0], classes)
            skip = ("head.fc.",)
        return timm_weights.load_state_dict(model, state, skip=skip, source=path)
    try:
        model.load_weights(path)
    except Exception as e:
        raise ValueError(f"Could not load Keras weights from {path!r}: {e}") from e
    return None


def _build(config, weights, include_top, classes, model_name=None, **kwargs):
    named = isinstance(weights, str) and not weights.endswith(WEIGHT_SUFFIXES)
    if classes is None:  # the published checkpoint's head (e.g. 11821 for ImageNet-12k), else 1000
        from keras_coatnet import pretrained

        classes = pretrained.get_weights(model_name, weights).classes if named else 1000
    if weights is None or (isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(WEIGHT_SUFFIXES)):
        path = weights
    elif named:
        from keras_coatnet import pretrained

        path = pretrained.fetch(model_name, weights, include_top=include_top, classes=classes)
    else:
        raise ValueError(f"weights must be None, a file path or a published weights name; got {weights!r}.")
    model = build_model(config, include_top=include_top, classes=classes, **kwargs)
    if path is not None:
        load_weights(model, path, include_top=include_top, classes=classes)
    return model


def create_model(model_name, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                 classes=None, classifier_activation="softmax", include_preprocessing=True, name=None,
                 drop_path_rate=0.0, dropout_rate=0.0):
    """Builds a registered model by name (see `list_models()`), with the `keras.applications` arguments.

    Input [B, H, W, 3] (default H, W: the model's native size), raw 0-255 RGB when `include_preprocessing`.
    `weights`: None, a file (timm `.safetensors`, Keras `.weights.h5`), 'imagenet' or a published tag.
    `classes`: default the published checkpoint's class count for named weights, else 1000."""
    entry = get_entry(model_name)
    if input_shape is None and input_tensor is None:
        input_shape = (*entry["input_size"], 3)
    return _build(entry["config"], weights, include_top, classes, model_name=model_name, input_tensor=input_tensor,
                  input_shape=input_shape, pooling=pooling, classifier_activation=classifier_activation,
                  include_preprocessing=include_preprocessing, name=name or model_name,
                  drop_path_rate=drop_path_rate, dropout_rate=dropout_rate, mean=entry["mean"], std=entry["std"])


def from_timm_config(timm_cfg, input_shape=(224, 224, 3), classes=1000, include_preprocessing=False, weights=None,
                     include_top=True, classifier_activation=None, name="coatnet", mean=TIMM_MEAN, std=TIMM_STD,
                     **kwargs):
    """Builds a model from timm's `MaxxVitCfg` as a dict (e.g. `dataclasses.asdict(model_cfgs[...])`),
    optionally loading a timm `.safetensors` state_dict. Outputs logits by default, like timm."""
    return _build(timm_cfg, weights, include_top, classes, input_shape=input_shape,
                  include_preprocessing=include_preprocessing, classifier_activation=classifier_activation,
                  name=name, mean=mean, std=std, **kwargs)


def _paper_constructor(index):
    model_name = f"coatnet_{index}"

    def constructor(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                    classes=None, classifier_activation="softmax", include_preprocessing=True, name=None,
                    **kwargs):
        return create_model(model_name, include_top=include_top, weights=weights, input_tensor=input_tensor,
                            input_shape=input_shape, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation,
                            include_preprocessing=include_preprocessing, name=name or f"CoAtNet{index}", **kwargs)

    constructor.__name__ = constructor.__qualname__ = f"CoAtNet{index}"
    constructor.__doc__ = (
        f"CoAtNet-{index} (Dai et al., 2021, Table 3) with the `keras.applications` signature.\n\n"
        "Input [B, H, W, 3] NHWC (default 224x224; H and W multiples of 32), raw 0-255 RGB when "
        "`include_preprocessing`. Returns a `keras.Model`.")
    return constructor


CoAtNet0, CoAtNet1, CoAtNet2, CoAtNet3, CoAtNet4, CoAtNet5, CoAtNet6, CoAtNet7 = (
    _paper_constructor(i) for i in range(8))
