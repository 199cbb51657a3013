"""timm checkpoints on the Hugging Face Hub, through the Hub's own client (`huggingface_hub`), both ways.

A source is `hf://owner/repo` (or timm's `hf-hub:owner/repo`), optionally `@revision`, or a local folder
holding timm's two files: `config.json` (`architecture`, `num_classes`, `label_names`, `pretrained_cfg`) and
`model.safetensors` (timm's state_dict, PyTorch layouts). Downloads go into the Hub cache timm uses
(`$HF_HOME/hub`, default `~/.cache/huggingface/hub`) and honour `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_TOKEN`.
Every client or file error becomes one `HubError` / `ValueError` line naming the repo and the cause.
"""

import dataclasses
import json
import os

from keras_coatnet.pretrained import EvalConfig, read_header

PREFIXES = ("hf://", "hf-hub:")
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
MODEL_ARGS = ("img_size", "in_chans", "num_classes", "global_pool", "drop_rate", "drop_path_rate")  # timm's
# `model_args` a checkpoint may carry (the two rates act in training only); others are refused


class HubError(OSError):
    """A checkpoint could not be fetched from the Hub (not found, private, offline and not cached)."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A timm checkpoint on this machine: `weights_path` (.safetensors), `architecture` (timm's model name),
    `num_classes`, `label_names` (tuple or None), `eval` (`EvalConfig`), `model_args` (timm kwargs such as
    img_size / in_chans) and `source` (as the user wrote it)."""

    source: str
    weights_path: str
    architecture: str
    num_classes: int
    label_names: tuple = None
    eval: EvalConfig = EvalConfig()
    model_args: dict = dataclasses.field(default_factory=dict)


def is_source(weights):
    """Whether `weights` names a Hub repo (hf://, hf-hub:) or a local timm folder (config.json inside)."""
    if not isinstance(weights, (str, os.PathLike)):
        return False
    text = os.fspath(weights)
    return text.startswith(PREFIXES) or os.path.isfile(os.path.join(text, CONFIG_FILE))


def parse_ref(ref):
    """'hf://owner/repo[@revision]' -> (repo_id, revision or None). Raises ValueError on another shape."""
    rest = next((ref[len(p):] for p in PREFIXES if ref.startswith(p)), None)
    repo, _, revision = (rest or "").partition("@")
    parts = repo.split("/")
    if rest is None or len(parts) != 2 or not all(parts):
        raise ValueError(f"{ref!r} is not a Hub reference; expected hf://owner/repo or hf://owner/repo@revision.")
    return repo, revision or None


def _client_error(ref, filename, e):
    """One line for a `huggingface_hub` exception."""
    from huggingface_hub import constants, errors

    if isinstance(e, errors.GatedRepoError):
        why = "the repo is gated: accept its terms on the Hub and set HF_TOKEN (or run `hf auth login`)"
    elif isinstance(e, errors.RepositoryNotFoundError):
        why = "repository not found (or private: set HF_TOKEN or run `hf auth login`)"
    elif isinstance(e, errors.RevisionNotFoundError):
        why = "revision not found"
    elif isinstance(e, errors.LocalEntryNotFoundError):
        offline = " (HF_HUB_OFFLINE is set)" if constants.is_offline_mode() else ""
        why = (f"{filename} is not in the Hub cache ({constants.HF_HUB_CACHE}) and {constants.ENDPOINT} cannot "
               f"be reached{offline}")
    elif isinstance(e, errors.EntryNotFoundError):
        why = f"the repo has no {filename}"
    elif isinstance(e, errors.HfHubHTTPError):
        status = getattr(e.response, "status_code", None)
        why = f"HTTP {status}: {str(e).splitlines()[0]}"
    elif isinstance(e, OSError) and e.errno is not None:
        why = f"cannot write {e.filename or filename} to the Hub cache: {e.strerror}"
    else:
        why = f"{filename}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}"
    return HubError(f"{ref}: {why}")


def _download(ref, filename, revision=None, token=None, force=False):
    """The local path of `filename` of the repo `ref` names, through the Hub cache."""
    from huggingface_hub import hf_hub_download

    from keras_coatnet import __version__

    repo_id, ref_revision = parse_ref(ref)
    try:
        return hf_hub_download(repo_id, filename, revision=revision or ref_revision, token=token,
                               force_download=force, library_name="keras_coatnet", library_version=__version__)
    except Exception as e:  # the client's and its HTTP library's (httpx) errors alike
        raise _client_error(ref, filename, e) from e


def _evict(path):
    """Removes a cached file: the snapshot entry and the blob it links to."""
    blob = os.path.realpath(path)
    for p in {path, blob}:
        if os.path.lexists(p):
            os.remove(p)


def _checked_weights(ref, revision, token):
    """The cached model.safetensors of `ref` after its header checks out; a bad copy is evicted and fetched
    once more; a second bad one is evicted and refused."""
    from huggingface_hub import constants

    path = _download(ref, WEIGHTS_FILE, revision, token)
    for attempt in (1, 2):
        try:
            read_header(path, f"{ref}/{WEIGHTS_FILE}")
            return path
        except ValueError as e:
            _evict(path)
            if attempt == 2 or constants.is_offline_mode():
                raise ValueError(f"{e} It was removed from the Hub cache.") from None
        path = _download(ref, WEIGHTS_FILE, revision, token, force=True)


def _read_config(path, shown):
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{shown}: unreadable {CONFIG_FILE} ({e}).") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("architecture"), str):
        raise ValueError(f"{shown}: {CONFIG_FILE} has no 'architecture' (not a timm model config).")
    return cfg


def checkpoint(source, revision=None, token=None):
    """A `Checkpoint` for `source` (hf://owner/repo[@revision] or a local timm folder), downloading its two
    files when they are not in the Hub cache."""
    source = os.fspath(source)
    if source.startswith(PREFIXES):
        config_path = _download(source, CONFIG_FILE, revision, token)
        cfg = _read_config(config_path, source)
        weights_path = _checked_weights(source, revision, token)
    else:
        config_path, weights_path = os.path.join(source, CONFIG_FILE), os.path.join(source, WEIGHTS_FILE)
        cfg = _read_config(config_path, source)
        read_header(weights_path)
    pretrained_cfg = cfg.get("pretrained_cfg") or {}
    model_args = dict(cfg.get("model_args") or {})
    unknown = sorted(set(model_args) - set(MODEL_ARGS))
    if unknown:
        raise ValueError(f"{source}: model_args {unknown} are not supported (only {list(MODEL_ARGS)}).")
    pool = model_args.get("global_pool", cfg.get("global_pool", "avg"))
    if pool != "avg":
        raise ValueError(f"{source}: global_pool {pool!r} is not supported (CoAtNet's head averages: 'avg').")
    labels = cfg.get("label_names") or pretrained_cfg.get("label_names")
    num_classes = int(cfg.get("num_classes", model_args.get("num_classes", pretrained_cfg.get("num_classes", 1000))))
    if labels is not None and len(labels) != num_classes:
        raise ValueError(f"{source}: {len(labels)} label_names for {num_classes} classes.")
    return Checkpoint(source=source, weights_path=weights_path, architecture=cfg["architecture"],
                      num_classes=num_classes, label_names=tuple(labels) if labels else None,
                      eval=EvalConfig.from_timm(pretrained_cfg), model_args=model_args)


def push_to_hub(folder, repo_id, token=None, private=None, commit_message="Add CoAtNet checkpoint"):
    """Uploads a folder written by `save_timm_checkpoint` to the Hub repo `repo_id` (created if needed).
    Returns the commit URL."""
    from huggingface_hub import create_repo, upload_folder

    create_repo(repo_id, token=token, private=private, exist_ok=True)
    return upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), token=token, commit_message=commit_message)


def timm_architecture(model):
    """timm's name for a Keras CoAtNet built by name (or for the model name itself): its registry name when timm
    has it, e.g. 'coatnet_rmlp_1_rw_224', or 'coatnet_<i>_224' for CoAtNet<i> / 'coatnet_<i>'. Raises
    ValueError for others."""
    from keras_coatnet.variants import MODELS

    name = model if isinstance(model, str) else model.name
    if name.startswith("CoAtNet") and name[7:].isdigit():
        name = f"coatnet_{name[7:]}"
    for candidate in (name, f"{name}_224"):
        if MODELS.get(candidate, {}).get("family") == "timm":
            return candidate
    raise ValueError(f"{name!r} is not a timm architecture (see keras_coatnet.list_models('timm')); "
                     "pass architecture=<timm model name> if it is one under another name.")


def _model_card(architecture, num_classes):
    return (f"---\nlibrary_name: timm\nlicense: apache-2.0\ntags:\n- image-classification\n- timm\n- keras\n---\n"
            f"# {architecture}\n\nA CoAtNet ({num_classes} classes) trained with keras_coatnet, saved in timm's "
            f"layout: `timm.create_model(\"hf-hub:<this repo>\", pretrained=True)`.\n")


def save_timm_checkpoint(model, folder, architecture=None, label_names=None, eval_config=None):
    """Writes `folder`/model.safetensors (timm's keys, PyTorch layouts), config.json (architecture,
    num_classes, label_names, pretrained_cfg with the model's mean/std and input size, model_args.img_size when
    the model is fixed to another size than the architecture's) and a README.md model card, each file whole or
    not at all. timm loads the folder with `timm.create_model('local-dir:<folder>', pretrained=True)`, or from
    the Hub after `push_to_hub`. Returns the folder."""
    from safetensors.numpy import save_file

    from keras_coatnet import atomic
    from keras_coatnet.pretrained import default_eval
    from keras_coatnet.timm_weights import timm_state_dict

    architecture = architecture or timm_architecture(model)
    state = timm_state_dict(model)
    fc = state.get("head.fc.weight")
    num_classes = int(fc.shape[0]) if fc is not None else 0
    base = eval_config or default_eval(architecture)
    h, w, channels = model.input_shape[1:]
    size = (h, w) if h and w else base.input_size
    mean, std = base.mean, base.std
    norm = next((layer for layer in model.layers if layer.name == "preprocessing"), None)
    if norm is not None and channels == 3:
        mean, std = norm.mean, norm.std
    labels = label_names if label_names is not None else getattr(model, "label_names", None)
    if labels is not None and len(labels) != num_classes:
        raise ValueError(f"{len(labels)} label_names for a {num_classes}-class model.")
    evals = dataclasses.replace(base, input_size=tuple(size), mean=tuple(mean), std=tuple(std))
    config = {"architecture": architecture, "num_classes": num_classes, "global_pool": "avg",
              "pretrained_cfg": {**evals.to_timm(channels), "num_classes": num_classes, "first_conv": "stem.conv1",
                                 "classifier": "head.fc"}}
    if labels is not None:
        config["label_names"] = list(labels)
    model_args = {}
    if tuple(size) != tuple(base.input_size):
        model_args["img_size"] = list(size)
    if channels != 3:
        model_args["in_chans"] = int(channels)
    if model_args:
        config["model_args"] = model_args
    os.makedirs(folder, exist_ok=True)
    with atomic.atomic_path(os.path.join(folder, WEIGHTS_FILE)) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic.write_text(os.path.join(folder, CONFIG_FILE), json.dumps(config, indent=2) + "\n")
    atomic.write_text(os.path.join(folder, "README.md"), _model_card(architecture, num_classes))
    return folder
