"""`keras.applications`-style constructors: CoAtNet0..CoAtNet7, `create_model(name)` and `from_timm_config`."""

import dataclasses
import logging
import os

from keras_coatnet import hub, pretrained, timm_weights
from keras_coatnet.builder import build_model
from keras_coatnet.variants import MODELS, PAPER_CONFIGS, get_entry

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
                        "initialized at random (pass classes=%d to keep it).", path, fc.shape[0], classes,
                        fc.shape[0])
            skip = ("head.fc.",)
        return timm_weights.load_state_dict(model, state, skip=skip, source=path)
    try:
        model.load_weights(path)
    except Exception as e:
        raise ValueError(f"Could not load Keras weights from {path!r}: {e}") from e
    return None


def _same_network(architecture, model_name):
    a, b = MODELS.get(architecture), MODELS.get(model_name)
    return a is not None and b is not None and a["config"] == b["config"]


def _resolve(weights, model_name):
    """(weights file or None, `hub.Checkpoint` or None) for any `weights` argument."""
    if weights is None:
        return None, None
    if isinstance(weights, hub.Checkpoint):
        return weights.weights_path, weights
    if hub.is_source(weights):
        ckpt = hub.checkpoint(weights)
        if model_name is not None and not _same_network(ckpt.architecture, model_name):
            raise ValueError(f"{ckpt.source} holds a {ckpt.architecture!r}, not a {model_name!r}; use "
                             f"keras_coatnet.from_pretrained({ckpt.source!r}) to build what it holds.")
        return ckpt.weights_path, ckpt
    if isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(WEIGHT_SUFFIXES):
        return os.fspath(weights), None
    if isinstance(weights, str):
        entry = pretrained.get_weights(model_name, weights)
        ckpt = hub.checkpoint(entry.hub_ref)
        pretrained.verify(ckpt.weights_path, entry, f"{entry.hub_ref}/{hub.WEIGHTS_FILE}")
        return ckpt.weights_path, ckpt
    raise ValueError(f"weights must be None, a file path, hf://owner/repo or a published weights name; got "
                     f"{weights!r}.")


def _build(config, weights, include_top, classes, model_name=None, input_shape=None, input_tensor=None,
           mean=None, std=None, table_size=None, **kwargs):
    path, ckpt = _resolve(weights, model_name)
    if ckpt is not None:
        evals = ckpt.eval
        size = ckpt.model_args.get("img_size")
        table_size = (size, size) if isinstance(size, int) else tuple(size) if size else table_size
    else:
        evals = pretrained.default_eval(model_name) if model_name else pretrained.EvalConfig()
    if input_shape is None and input_tensor is None and include_top:
        input_shape = (*(table_size or evals.input_size), ckpt.model_args.get("in_chans", 3) if ckpt else 3)
    if classes is None:  # the checkpoint's head (e.g. 11821 for ImageNet-12k), else 1000
        classes = ckpt.num_classes if ckpt else 1000
    model = build_model(config, include_top=include_top, classes=classes, input_shape=input_shape,
                        input_tensor=input_tensor, mean=mean or evals.mean, std=std or evals.std,
                        table_size=table_size, **kwargs)
    if path is not None:
        load_weights(model, path, include_top=include_top, classes=classes)
    model.eval_config = dataclasses.replace(evals, input_size=tuple(model.input_shape[1:3])) \
        if None not in model.input_shape[1:3] else evals
    if ckpt is not None and include_top and classes == ckpt.num_classes:
        model.label_names = ckpt.label_names
    return model


def create_model(model_name, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                 classes=None, classifier_activation="softmax", include_preprocessing=True, name=None,
                 drop_path_rate=0.0, dropout_rate=0.0):
    """Builds a registered model by name (see `list_models()`), with the `keras.applications` arguments.

    Input [B, H, W, C]: default (native, native, 3) with the classifier, else (None, None, 3) (any H, W >= 32
    at run time); raw 0-255 RGB when `include_preprocessing`. Relative-position tables are made for the
    model's native size (its checkpoints') and resized in the graph at any other.
    `weights`: None, a file (timm `.safetensors`, Keras `.weights.h5`), 'imagenet' or a published tag (both
    from the Hub), `hf://owner/repo[@revision]`, or a local folder a timm checkpoint was saved to.
    `classes`: default the checkpoint's class count, else 1000. The model's `eval_config` attribute holds the
    checkpoint's eval preprocessing (`pretrained.EvalConfig`); `label_names` its class names when it has them."""
    entry = get_entry(model_name)
    return _build(entry["config"], weights, include_top, classes, model_name=model_name, input_tensor=input_tensor,
                  input_shape=input_shape, pooling=pooling, classifier_activation=classifier_activation,
                  include_preprocessing=include_preprocessing, name=name or model_name,
                  drop_path_rate=drop_path_rate, dropout_rate=dropout_rate, table_size=tuple(entry["input_size"]))


def from_pretrained(source, include_top=True, input_tensor=None, input_shape=None, pooling=None, classes=None,
                    classifier_activation="softmax", include_preprocessing=True, name=None, revision=None,
                    token=None, **kwargs):
    """Builds and loads the timm CoAtNet that `source` holds (hf://owner/repo[@revision], or a local folder
    with timm's config.json + model.safetensors), its architecture, head, label names and normalization read
    from config.json. Other arguments as `create_model`. Raises ValueError for an architecture we do not build."""
    ckpt = hub.checkpoint(source, revision=revision, token=token)
    if ckpt.architecture not in MODELS:
        timm_names = ", ".join(n for n, e in sorted(MODELS.items()) if e["family"] == "timm")
        raise ValueError(f"{ckpt.source}: architecture {ckpt.architecture!r} is not a CoAtNet keras_coatnet builds "
                         f"({timm_names}).")
    return create_model(ckpt.architecture, include_top=include_top, weights=ckpt, input_tensor=input_tensor,
                        input_shape=input_shape, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation, include_preprocessing=include_preprocessing,
                        name=name, **kwargs)


def from_timm_config(timm_cfg, input_shape=(224, 224, 3), classes=1000, include_preprocessing=False, weights=None,
                     include_top=True, classifier_activation=None, name="coatnet", mean=None, std=None, **kwargs):
    """Builds a model from timm's `MaxxVitCfg` as a dict (e.g. `dataclasses.asdict(model_cfgs[...])`),
    optionally loading a timm `.safetensors` state_dict. Outputs logits by default, like timm. mean / std (for
    `include_preprocessing`): default the checkpoint's when `weights` is a Hub source or timm folder, else 0.5."""
    return _build(timm_cfg, weights, include_top, classes, input_shape=input_shape,
                  include_preprocessing=include_preprocessing, classifier_activation=classifier_activation,
                  name=name, mean=mean, std=std, **kwargs)


BASE_DOCSTRING = """Instantiates {title} (Dai et al., 2021, Table 3) with the `keras.applications` arguments.

Stem width {stem}, stage widths {dims}, stage depths {depths}{timm}.

Input [B, H, W, 3] NHWC, raw 0-255 RGB (normalized inside) when `include_preprocessing`. Returns a `keras.Model`
giving [B, classes] scores with `include_top`, else the [B, H/32, W/32, C] feature map or, with `pooling`,
[B, C] features.

Args:
    include_top: whether to include the classification head (final norm, pooling, classifier). Defaults to `True`.
    weights: `None` (random initialization), the path to a weights file (a timm `.safetensors` state_dict of
        this architecture, or a Keras `.weights.h5` / `.keras` file), `"hf://owner/repo"` (a timm checkpoint of
        this network on the Hugging Face Hub) or a local folder holding one. Defaults to `None`.
    input_tensor: optional Keras tensor (output of `keras.Input()`) to use as the model's input, [B, H, W, C].
    input_shape: optional `(H, W, C)`: H and W at least 32, or None for any size at run time (one model for
        every resolution; the relative-position tables are resized in the graph); C >= 1 channels (pretrained
        weights adapt their first conv as timm does). Defaults to `(224, 224, 3)` with `include_top`, else
        `(None, None, 3)` (or the shape of `input_tensor`).
    pooling: feature pooling when `include_top` is `False`: `None` (the 4-D feature map), `"avg"` or `"max"`
        (2-D [B, C] features).
    classes: number of classes to classify images into, used with `include_top`. Defaults to 1000.
    classifier_activation: activation of the classifier's output, a name or callable; `None` returns logits.
        Defaults to `"softmax"`.
    include_preprocessing: whether the model normalizes raw 0-255 RGB input itself (timm's mean and std).
        Defaults to `True`. RGB only: with C != 3 channels pass `False` and feed normalized input.
    name: the name of the model. Defaults to `"{fn}"`.
    drop_path_rate: stochastic depth rate of the last block, rising linearly from 0 over the blocks (used in
        training). Defaults to 0.0.
    dropout_rate: dropout rate before the classifier (used in training). Defaults to 0.0.

Returns:
    A `keras.Model` instance.
"""


def _paper_model(index, name=None, **kwargs):
    """CoAtNet-`index` through `create_model`, named "CoAtNet<index>" unless `name` is given."""
    return create_model(f"coatnet_{index}", name=name or f"CoAtNet{index}", **kwargs)


# One function per variant, as keras.applications has, so that `help()` shows every argument; `locals()` (taken
# first thing) is exactly those arguments.
def CoAtNet0(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
             classifier_activation="softmax", include_preprocessing=True, name=None, drop_path_rate=0.0,
             dropout_rate=0.0):
    return _paper_model(0, **locals())


def CoAtNet1(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
             classifier_activation="softmax", include_preprocessing=True, name=None, drop_path_rate=0.0,
             dropout_rate=0.0):
    return _paper_model(1, **locals())


def CoAtNet2(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
             classifier_activation="softmax", include_preprocessing=True, name=None, drop_path_rate=0.0,
             dropout_rate=0.0):
    return _paper_model(2, **locals())


def CoAtNet3(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
             classifier_activation="softmax", include_preprocessing=True, name=None, drop_path_rate=0.0,
             dropout_rate=0.0):
    return _paper_model(3, **locals())


def CoAtNet4(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
             classifier_activation="softmax", include_preprocessing=True, name=None, drop_path_rate=0.0,
             dropout_rate=0.0):
    return _paper_model(4, **locals())


def CoAtNet5(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
             classifier_activation="softmax", include_preprocessing=True, name=None, drop_path_rate=0.0,
             dropout_rate=0.0):
    return _paper_model(5, **locals())


def CoAtNet6(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
             classifier_activation="softmax", include_preprocessing=True, name=None, drop_path_rate=0.0,
             dropout_rate=0.0):
    return _paper_model(6, **locals())


def CoAtNet7(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
             classifier_activation="softmax", include_preprocessing=True, name=None, drop_path_rate=0.0,
             dropout_rate=0.0):
    return _paper_model(7, **locals())


def _docstring(index):
    cfg = PAPER_CONFIGS[f"coatnet_{index}"]
    dims = ", ".join(str(d) if isinstance(d, int) else f"{d[0]} then {d[-1]}" for d in cfg["embed_dim"])
    timm = f"coatnet_{index}_224"
    return BASE_DOCSTRING.format(
        title=f"CoAtNet-{index}", fn=f"CoAtNet{index}", stem=cfg["stem_width"], dims=f"({dims})",
        depths=cfg["depths"], timm=f"; the same network as timm's `{timm}`" if timm in MODELS else "")


for _i, _fn in enumerate((CoAtNet0, CoAtNet1, CoAtNet2, CoAtNet3, CoAtNet4, CoAtNet5, CoAtNet6, CoAtNet7)):
    _fn.__doc__ = _docstring(_i)
