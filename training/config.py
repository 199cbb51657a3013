"""Training configuration: documented defaults < preset < YAML/JSON file < CLI flags."""
import argparse
import json
import os

import yaml

PRESET_DIR = os.path.join(os.path.dirname(__file__), "presets")

# key: (default, help). The recipe follows the CoAtNet paper (ImageNet-1K) and timm.
SPEC = {
    # model
    "model": ("coatnet_0", "keras_coatnet model name"),
    "image_size": (224, "square input size in pixels (multiple of 32)"),
    "drop_path_rate": (0.2, "stochastic depth rate (create_model drop_path_rate)"),
    "dropout_rate": (0.0, "dropout before the classifier"),
    "weights": (None, "initial weights: 'imagenet', a tag, hf://owner/repo[@rev], a timm folder, or a .keras / "
                      "weights path (fine-tuning)"),
    "freeze_backbone": (False, "train only the classifier head"),
    "sync_batchnorm": (False, "BatchNorm statistics over the global batch, not per replica"),
    "layer_decay": (None, "layer-wise LR decay factor (e.g. 0.75); None = off"),
    # data
    "dataset": ("digits", "digits | folder | tfrecord | tfds:NAME"),
    "train_data": (None, "folder of class/xxx.jpg, or TFRecord file/dir/glob"),
    "val_data": (None, "same kind as train_data; None = hold out val_fraction of train"),
    "test_data": (None, "same kind as train_data; None = no test split (digits has one)"),
    "val_fraction": (0.1, "fraction of train held out for validation when val_data is None"),
    "num_classes": (None, "None = inferred from the data"),
    "tfrecord_label_offset": (0, "added to image/class/label (-1 for 1-based ImageNet shards)"),
    "scan_images": (True, "decode every image once up front to skip and count unreadable ones"),
    "crop_pct": (0.875, "eval: resize to image_size/crop_pct then center crop"),
    "deterministic": (False, "deterministic tf.data order and TF ops (slower)"),
    "seed": (0, "random seed"),
    # augmentation
    "rrc_scale": ([0.08, 1.0], "RandomResizedCrop area range"),
    "rrc_ratio": ([0.75, 1.3333], "RandomResizedCrop aspect-ratio range"),
    "hflip": (True, "random horizontal flip"),
    "randaugment_ops": (2, "RandAugment ops per image (0 = off)"),
    "randaugment_factor": (0.5, "RandAugment strength in [0, 1] (paper magnitude 15 of 30)"),
    "mixup_alpha": (0.8, "MixUp alpha (0 = off)"),
    "cutmix_alpha": (0.0, "CutMix factor (0 = off)"),
    "mix_switch_prob": (0.5, "when both MixUp and CutMix are on: probability of CutMix per batch"),
    "random_erasing": (0.0, "RandomErasing probability"),
    "label_smoothing": (0.1, "label smoothing"),
    # optimisation
    "epochs": (300, "training epochs"),
    "batch_size": (32, "per-replica batch; global batch = batch_size x replicas"),
    "steps_per_epoch": (None, "None = train examples // global batch"),
    "lr": (1e-3, "peak learning rate at lr_base_batch"),
    "lr_base_batch": (4096, "global batch at which lr applies"),
    "lr_scaling": ("linear", "scale lr with the global batch: linear | sqrt | none"),
    "min_lr_ratio": (0.01, "cosine decays to lr x min_lr_ratio"),
    "warmup_epochs": (5, "linear warmup epochs"),
    "weight_decay": (0.05, "AdamW decoupled weight decay (not on norms, biases, rel-pos tables)"),
    "beta_1": (0.9, "AdamW beta_1"),
    "beta_2": (0.999, "AdamW beta_2"),
    "clipnorm": (1.0, "global gradient-norm clipping (None = off)"),
    "use_ema": (False, "keep an EMA of the weights (evaluated and saved)"),
    "ema_momentum": (0.9999, "EMA momentum"),
    "mixed_precision": ("auto", "auto (on for GPU/TPU) | true | false"),
    "jit_compile": (False, "XLA-compile the train step"),
    # distribution
    "strategy": ("auto", "auto | onedevice | mirrored | multiworker | tpu"),
    "tpu": (None, "TPU address (grpc://host:8470, a TPU name, or 'local')"),
    # run
    "output_dir": ("runs/coatnet", "where checkpoints, logs and metrics go"),
    "eval_only": (False, "only evaluate `weights` on the test (else val) split"),
    "save_timm": (False, "also write best_timm/: best.keras as a timm checkpoint (model.safetensors + config.json)"),
    "backup": (True, "back up at every epoch end and at SIGTERM (output_dir/backup); a rerun resumes there"),
    "overwrite": (False, "replace a finished run in output_dir (else refused); drop an unfinished run's backup/"),
    "verbose": (1, "Keras fit verbosity: 1 progbar, 2 one line per epoch, 0 silent"),
}
DEFAULTS = {k: v[0] for k, v in SPEC.items()}
# Flag value types where the default (None) does not say; "none" gives None for these and for clipnorm.
OPTIONAL_TYPES = {"weights": str, "layer_decay": float, "train_data": str, "val_data": str, "test_data": str,
                  "num_classes": int, "steps_per_epoch": int, "tpu": str}
NULLABLE = set(OPTIONAL_TYPES) | {"clipnorm"}
STRATEGIES = ("auto", "onedevice", "mirrored", "multiworker", "tpu")


def list_presets():
    """Names of the bundled presets (training/presets/*.yaml)."""
    return sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".yaml"))


def load_file(path):
    """Load a YAML or JSON config file into a dict."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        try:
            data = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ValueError(f"config file {path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {path} is not valid JSON: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of option: value")
    return data


def _check_keys(cfg, where):
    unknown = sorted(set(cfg) - set(SPEC) - {"preset", "config"})
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} in {where}; allowed: {sorted(SPEC)}")


def resolve(overrides=None, config_file=None):
    """Merge DEFAULTS < preset < config_file < overrides and validate; returns a new dict."""
    overrides = dict(overrides or {})
    _check_keys(overrides, "overrides")
    config_file = overrides.pop("config", None) or config_file
    file_cfg = load_file(config_file) if config_file else {}
    _check_keys(file_cfg, config_file)
    preset = overrides.pop("preset", None) or file_cfg.pop("preset", None)
    file_cfg.pop("preset", None)
    cfg = dict(DEFAULTS)
    if preset:
        if preset not in list_presets():
            raise ValueError(f"unknown preset {preset!r}; allowed: {list_presets()}")
        preset_cfg = load_file(os.path.join(PRESET_DIR, preset + ".yaml"))
        _check_keys(preset_cfg, f"preset {preset}")
        cfg.update(preset_cfg)
    cfg.update(file_cfg)
    cfg.update(overrides)
    for key, value in cfg.items():  # YAML reads 1e-1 as a string: numbers given as text are parsed here
        kind = OPTIONAL_TYPES.get(key) or type(DEFAULTS.get(key))
        if isinstance(value, str) and kind in (int, float):
            try:
                cfg[key] = flag_type(key)(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} is not {'an int' if kind is int else 'a number'}") from None
    validate(cfg)
    return cfg


def validate(cfg):
    """Raise ValueError on values that cannot work."""
    if cfg["strategy"] not in STRATEGIES:
        raise ValueError(f"strategy={cfg['strategy']!r}; allowed: {list(STRATEGIES)}")
    if cfg["lr_scaling"] not in ("linear", "sqrt", "none"):
        raise ValueError(f"lr_scaling={cfg['lr_scaling']!r}; allowed: linear, sqrt, none")
    if str(cfg["mixed_precision"]).lower() not in ("auto", "true", "false"):
        raise ValueError(f"mixed_precision={cfg['mixed_precision']!r}; allowed: auto, true, false")
    if cfg["image_size"] % 32:
        raise ValueError(f"image_size={cfg['image_size']} must be a multiple of 32")
    for key in ("epochs", "batch_size"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key}={cfg[key]} must be >= 1")
    if not 0.0 <= cfg["val_fraction"] < 1.0:
        raise ValueError(f"val_fraction={cfg['val_fraction']} must be in [0, 1)")
    if cfg["save_timm"]:
        from keras_coatnet.hub import timm_architecture

        try:
            timm_architecture(cfg["model"])
        except ValueError as e:
            raise ValueError(f"save_timm: {e}") from None
    if cfg["eval_only"] and not cfg["weights"]:
        raise ValueError("eval_only needs weights (a .keras checkpoint path or 'imagenet')")


def _flag(key):
    return "--" + key.replace("_", "-")


def flag_type(key):
    """Parser of a flag's text by the option's type (int, float, str, list of numbers); "none" -> None
    where the option allows it. Raises ValueError (argparse reports it as an invalid value)."""
    default = DEFAULTS[key]
    kind = OPTIONAL_TYPES.get(key) or type(default)

    def parse(text):
        if key in NULLABLE and text.strip().lower() in ("none", "null"):
            return None
        if kind is list:
            value = yaml.safe_load(text)
            if not isinstance(value, list):
                raise ValueError(text)
            return [float(v) for v in value]
        return kind(text)

    parse.__name__ = "list of numbers" if kind is list else kind.__name__  # named in argparse's error
    return parse


class _OneLineParser(argparse.ArgumentParser):
    """argparse that raises ValueError (one error line, exit 2 from the CLI) instead of printing usage."""

    def error(self, message):
        raise ValueError(f"{message} (see --help)")


def build_parser():
    """argparse parser with one flag per option; booleans also get --no-<flag>."""
    p = _OneLineParser(
        prog="python -m training.train",
        description="Train or evaluate a keras_coatnet model with tf.distribute. "
        "Precedence: defaults < --preset < --config file < flags.",
    )
    p.add_argument("--config", help="YAML or JSON file of options")
    p.add_argument("--preset", help=f"bundled preset: {', '.join(list_presets())}")
    p.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    for key, (default, help_text) in SPEC.items():
        if isinstance(default, bool):
            p.add_argument(_flag(key), dest=key, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=f"{help_text} (default {default})")
        else:
            p.add_argument(_flag(key), dest=key, type=flag_type(key), default=argparse.SUPPRESS,
                           metavar="V", help=f"{help_text} (default {default})")
    return p


def parse_cli(argv=None):
    """Parse argv into (resolved config, debug flag)."""
    args = vars(build_parser().parse_args(argv))
    debug = args.pop("debug")
    return resolve(args), debug
