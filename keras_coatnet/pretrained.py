"""The published CoAtNet checkpoints (timm's, on the Hugging Face Hub as `timm/<model>.<tag>`), as data.

`WEIGHTS` is the one eval-config table (timm's `default_cfgs`, keyed '<model>.<tag>'): each checkpoint's Hub id,
classifier size, parameter count, eval preprocessing (mean, std, crop: `EvalConfig`, timm's `pretrained_cfg`)
and tensor manifest. What the model is (architecture, native input size) is not here: that table is
`variants.MODELS`. Files come through `hub` (the Hugging Face client and its cache); a file named by a tag is
checked against its manifest: the sorted (timm key, shape) list of its learned tensors, hashed (timm 1.0.31's
state_dict for that model; the tests check it against ours).
"""

import dataclasses
import hashlib
import math

from keras_coatnet.config import IMAGENET_MEAN, IMAGENET_STD, TIMM_MEAN, TIMM_STD
from keras_coatnet.timm_weights import IGNORED_SUFFIXES
from keras_coatnet.variants import get_entry

HUB_OWNER = "timm"
DEFAULT_TAGS = ("sw_in1k", "sw_in12k_ft_in1k")  # what weights="imagenet" picks, in order of preference
TIMM_DEFAULT_CROP_PCT = 0.875  # timm's crop_pct where a pretrained_cfg has none


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """How a checkpoint's images are prepared at evaluation (timm's `pretrained_cfg`): resize so that the crop
    keeps `crop_pct` of the shorter side ('center'), or both sides ('squash'), with `interpolation`, then a
    center crop to `input_size` (H, W); `mean` / `std` on the 0-1 scale, RGB."""

    input_size: tuple = (224, 224)
    crop_pct: float = 0.95
    crop_mode: str = "center"
    interpolation: str = "bicubic"
    mean: tuple = TIMM_MEAN
    std: tuple = TIMM_STD

    @property
    def resize_size(self):
        """(H, W) the image is resized to before the crop: floor(size / crop_pct) per side (timm)."""
        return tuple(math.floor(s / self.crop_pct) for s in self.input_size)

    @classmethod
    def from_timm(cls, cfg, default_size=(224, 224)):
        """From a timm `pretrained_cfg` dict (input_size [C, H, W]); timm's defaults for missing keys."""
        size = tuple(int(s) for s in cfg["input_size"][-2:]) if cfg.get("input_size") else tuple(default_size)
        return cls(input_size=size, crop_pct=float(cfg.get("crop_pct") or TIMM_DEFAULT_CROP_PCT),
                   crop_mode=cfg.get("crop_mode") or "center", interpolation=cfg.get("interpolation") or "bicubic",
                   mean=tuple(float(m) for m in cfg.get("mean", TIMM_MEAN)),
                   std=tuple(float(s) for s in cfg.get("std", TIMM_STD)))

    def to_timm(self, channels=3):
        """The timm `pretrained_cfg` keys this config sets."""
        return {"input_size": [channels, *self.input_size], "crop_pct": self.crop_pct, "crop_mode": self.crop_mode,
                "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}


@dataclasses.dataclass(frozen=True)
class Weights:
    """One published checkpoint: `model` (its `variants.MODELS` name), `tag`, and how it was trained and evaluated.

    classes: classifier size (1000 ImageNet-1k, 11821 timm's ImageNet-12k). params: its parameter count.
    manifest_sha256: see `manifest_digest`. top1: ImageNet-1k top-1 (%) in timm's results table, else None.
    eval: its `EvalConfig`; input_size None means the model's native size (its `variants.MODELS` entry's).
    """

    model: str
    tag: str
    classes: int
    params: int
    manifest_sha256: str
    top1: float = None
    crop_pct: float = 0.95
    crop_mode: str = "center"
    mean: tuple = TIMM_MEAN
    std: tuple = TIMM_STD

    @property
    def name(self):
        return f"{self.model}.{self.tag}"

    @property
    def hub_ref(self):
        return f"hf://{HUB_OWNER}/{self.name}"

    @property
    def eval(self):
        return EvalConfig(input_size=tuple(get_entry(self.model)["input_size"]), crop_pct=self.crop_pct,
                          crop_mode=self.crop_mode, mean=self.mean, std=self.std)

    @property
    def input_size(self):
        return self.eval.input_size


_IN12K = 11821
_W = Weights
WEIGHTS = {w.name: w for w in (
    _W("coatnet_nano_rw_224", "sw_in1k", 1000, 15_141_244,
       "dda41131b7b759f394a4e0221bc39b9bb7f0534c9a315004b8778ef1c114b2f7", 81.704, crop_pct=0.9),
    _W("coatnet_0_rw_224", "sw_in1k", 1000, 27_435_562,
       "91497a3c90aef35aa213c3aa7f9699dae76c174b6ff4bc38d128e05a9edd82ab", 82.396),
    _W("coatnet_1_rw_224", "sw_in1k", 1000, 41_721_502,
       "21385e8e1abafcb154a6618e12bc8a2b644e023cf8b92246602b4840bf8699c2", 83.620),
    _W("coatnet_2_rw_224", "sw_in12k_ft_in1k", 1000, 73_868_400,
       "ca26a1f594d49b6214dfeca30f0adb764baace7a79676602b5f4e02f2312b8a0", 86.582),
    _W("coatnet_2_rw_224", "sw_in12k", _IN12K, 84_959_925,
       "4df532aa4a3efc1b88a3b775dc750a937473cdbfb6af30437460510a5b7fe367"),
    _W("coatnet_3_rw_224", "sw_in12k", _IN12K, 181_805_305,
       "97f589246a3fdb230a0786d05d55b44fea279384570603933cc711eeda18989d"),
    _W("coatnet_bn_0_rw_224", "sw_in1k", 1000, 27_435_562,
       "26e2bdb14df7f6edeafab0fe734c59343f385cfb9cccf4bff74de07f722426db", 82.394,
       mean=IMAGENET_MEAN, std=IMAGENET_STD),
    _W("coatnet_rmlp_nano_rw_224", "sw_in1k", 1000, 15_145_116,
       "0d9ab0f37781308857b82d0f6160b379c932a9d3636b9b2545725a969291bcbe", 82.064, crop_pct=0.9),
    _W("coatnet_rmlp_1_rw_224", "sw_in1k", 1000, 41_691_982,
       "c245569c36a5cab0aab176ddab0e930d109ad40c465790b2a78412e3d31e263a", 83.350),
    _W("coatnet_rmlp_1_rw2_224", "sw_in12k_ft_in1k", 1000, 41_724_622,
       "f0c7b5ead77314fbb4ef2d0ccfe511d77c45f0bdd1b90c274c376e1dec80c159", 84.940),
    _W("coatnet_rmlp_1_rw2_224", "sw_in12k", _IN12K, 50_045_971,
       "e135b2c2e75004c024012da1c2f2686494c8f856f7864325d2311dd8d0479e6e"),
    _W("coatnet_rmlp_2_rw_224", "sw_in1k", 1000, 73_881_264,
       "9ed32fd3cd62037ae907b78a42afb7d6e73bd70b102c1bbdf965bbbc5d3c378d", 84.608),
    _W("coatnet_rmlp_2_rw_224", "sw_in12k_ft_in1k", 1000, 73_881_264,
       "9ed32fd3cd62037ae907b78a42afb7d6e73bd70b102c1bbdf965bbbc5d3c378d", 86.538),
    _W("coatnet_rmlp_2_rw_224", "sw_in12k", _IN12K, 84_972_789,
       "3311c3a0f8ee34581d23b4f4584d6371226606ab351432c7cb7ee9859f5b4ae1"),
    _W("coatnet_rmlp_2_rw_384", "sw_in12k_ft_in1k", 1000, 73_881_264,
       "9ed32fd3cd62037ae907b78a42afb7d6e73bd70b102c1bbdf965bbbc5d3c378d", 87.388, crop_pct=1.0,
       crop_mode="squash"),
)}


def list_weights(model_name=None):
    """Sorted '<model>.<tag>' names of the published weights (of one model if `model_name` is given)."""
    return sorted(n for n, w in WEIGHTS.items() if model_name in (None, w.model))


def models_with_weights():
    return sorted({w.model for w in WEIGHTS.values()})


def get_weights(model_name, weights="imagenet"):
    """The `Weights` entry for `model_name` and `weights` ('imagenet', a tag such as 'sw_in12k', or
    '<model>.<tag>'). Raises ValueError saying what is available."""
    if model_name is None:
        raise ValueError(f"weights={weights!r} names published weights, which need a registered model name "
                         "(create_model(name, ...)); pass a weights file path instead.")
    tags = [WEIGHTS[n].tag for n in list_weights(model_name)]
    if not tags:
        raise ValueError(f"No published weights for {model_name!r}. Models with weights: "
                         f"{', '.join(models_with_weights())}. Use weights=None or a weights file path.")
    if weights == "imagenet":
        tag = next((t for t in DEFAULT_TAGS if t in tags), None)
        if tag is None:
            raise ValueError(f"{model_name!r} has no ImageNet-1k weights; its published weights are {tags} "
                             f"(e.g. weights={tags[0]!r}, classes={WEIGHTS[f'{model_name}.{tags[0]}'].classes}).")
    else:
        tag = weights[len(model_name) + 1:] if weights.startswith(f"{model_name}.") else weights
        if tag not in tags:
            raise ValueError(f"Unknown weights {weights!r} for {model_name!r}; expected 'imagenet', one of {tags}, "
                             "or a weights file path (.safetensors, .weights.h5, .keras).")
    return WEIGHTS[f"{model_name}.{tag}"]


def _timm_shape(shape):
    """A tensor shape as compared in manifests: a 1x1 conv kernel [O, I, 1, 1] counts as [O, I]."""
    shape = tuple(int(s) for s in shape)
    return shape[:2] if len(shape) == 4 and shape[2:] == (1, 1) else shape


def manifest_digest(shapes):
    """SHA-256 hex of a manifest: the sorted 'key:d0xd1x...' lines of {timm key: shape}, without timm's
    non-learned buffers (`IGNORED_SUFFIXES`), 1x1 conv kernels counted as [O, I]."""
    lines = sorted(f"{k}:{'x'.join(map(str, _timm_shape(s)))}" for k, s in shapes.items()
                   if not k.endswith(IGNORED_SUFFIXES))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def model_manifest(model):
    """{timm key: shape in PyTorch layout} for every weight of a Keras CoAtNet (see `timm_weights`)."""
    from keras import layers

    from keras_coatnet.timm_weights import variable_map

    out = {}
    for key, (variable, layer) in variable_map(model).items():
        shape = tuple(variable.shape)
        if key.endswith(".weight") and isinstance(layer, layers.DepthwiseConv2D):
            shape = (shape[2], shape[3], shape[0], shape[1])  # [kh, kw, C, 1] -> [C, 1, kh, kw]
        elif key.endswith(".weight") and isinstance(layer, layers.Conv2D):
            shape = (shape[3], shape[2], shape[0], shape[1])  # HWIO -> OIHW
        elif key.endswith(".weight") and isinstance(layer, layers.Dense):
            shape = shape[::-1]  # [in, out] -> [out, in]
        out[key] = shape
    return out


def read_header(path, shown=None):
    """{key: shape} of a `.safetensors` file, read by the `safetensors` library, which checks that the header
    covers the file exactly. Raises ValueError '<shown> is truncated or corrupt (...)'."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "np") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{shown or path} is truncated or corrupt (not a readable safetensors file: {e}).") \
            from None


def verify(path, entry, shown=None):
    """Raises ValueError unless the `.safetensors` file at `path` holds the checkpoint `entry` describes (its
    tensor manifest). Messages name it `shown` (default: path)."""
    shown = shown or path
    shapes = read_header(path, shown)
    if manifest_digest(shapes) != entry.manifest_sha256:
        fc = shapes.get("head.fc.weight")
        learned = sum(not k.endswith(IGNORED_SUFFIXES) for k in shapes)
        raise ValueError(f"{shown} does not hold {entry.name}: its {learned} tensors (classifier "
                         f"{fc and list(fc)}) differ in names or shapes from the checkpoint's ({entry.classes} "
                         "classes). Check the model name and tag.")


def default_eval(model_name):
    """The `EvalConfig` a registered model is built with when no checkpoint says otherwise: its ImageNet
    checkpoint's (else its first published one's), else timm's CoAtNet defaults at its native size."""
    names = list_weights(model_name)
    if names:
        preferred = [n for t in DEFAULT_TAGS for n in names if n.endswith(f".{t}")]
        return WEIGHTS[(preferred or names)[0]].eval
    return EvalConfig(input_size=tuple(get_entry(model_name)["input_size"]))
