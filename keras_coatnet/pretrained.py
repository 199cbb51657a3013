"""Published CoAtNet weights: timm's checkpoints on Hugging Face, and `fetch`, which returns a verified local file.

`create_model(name, weights="imagenet")` (or `weights="<tag>"`, e.g. "sw_in12k") calls `fetch`, which looks in
`$KERAS_COATNET_WEIGHTS_DIR` (files placed by hand, named `<model>.<tag>.safetensors`), then in the cache
`$KERAS_HOME/models/keras_coatnet/` (default `~/.keras/models/keras_coatnet/`), then downloads from
`$KERAS_COATNET_WEIGHTS_URL` (default https://huggingface.co/timm) + `/<model>.<tag>/resolve/main/model.safetensors`.

No SHA-256 of the published files is recorded here (None), so a file is verified by its tensor manifest: the
sorted (timm key, shape) list of its learned tensors, hashed. Each entry records the manifest of timm's own
state_dict for that model (timm 1.0.31); the tests check it against the manifest of our Keras model.
"""

import dataclasses
import hashlib
import json
import logging
import math
import os
import struct

from keras_coatnet import download
from keras_coatnet.builder import IMAGENET_MEAN, IMAGENET_STD, TIMM_MEAN, TIMM_STD
from keras_coatnet.timm_weights import IGNORED_SUFFIXES

log = logging.getLogger("keras_coatnet")

BASE_URL = "https://huggingface.co/timm"
URL_ENV, DIR_ENV = "KERAS_COATNET_WEIGHTS_URL", "KERAS_COATNET_WEIGHTS_DIR"
DEFAULT_TAGS = ("sw_in1k", "sw_in12k_ft_in1k")  # what weights="imagenet" picks, in order of preference


@dataclasses.dataclass(frozen=True)
class Weights:
    """One published checkpoint: `model` (our registry name), `tag`, and how it was trained and evaluated.

    classes: classifier size (1000 ImageNet-1k, 11821 timm's ImageNet-12k). input_size: (H, W) it was trained
    at. crop_pct/crop_mode/interpolation/mean/std: timm's eval preprocessing. params: its parameter count.
    manifest_sha256: see `manifest_digest`. top1: ImageNet-1k top-1 (%) in timm's results table, else None.
    """

    model: str
    tag: str
    classes: int
    params: int
    manifest_sha256: str
    top1: float = None
    input_size: tuple = (224, 224)
    crop_pct: float = 0.95
    crop_mode: str = "center"
    interpolation: str = "bicubic"
    mean: tuple = TIMM_MEAN
    std: tuple = TIMM_STD
    sha256: str = None

    @property
    def name(self):
        return f"{self.model}.{self.tag}"

    @property
    def file_name(self):
        return f"{self.name}.safetensors"

    @property
    def resize_size(self):
        """(H, W) an image is resized to before the center crop to `input_size` (timm: floor(size / crop_pct));
        equal to `input_size` for 'squash' (resize straight to it)."""
        if self.crop_mode == "squash":
            return self.input_size
        return tuple(int(s / self.crop_pct) for s in self.input_size)

    def url(self, base_url=None):
        base = (base_url or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
        return f"{base}/{self.name}/resolve/main/model.safetensors"


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
       "9ed32fd3cd62037ae907b78a42afb7d6e73bd70b102c1bbdf965bbbc5d3c378d", 87.388, input_size=(384, 384),
       crop_pct=1.0, crop_mode="squash"),
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


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def read_header(path, shown=None):
    """{key: shape} of a `.safetensors` file, after checking that each tensor's byte range fits its dtype and
    shape and that the file's size matches its header. Raises ValueError for a truncated, padded or foreign file,
    naming it `shown` (default: path)."""
    shown = shown or path
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            raise ValueError(f"{shown} is not a safetensors file (or is truncated): {size} bytes.")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{shown} has an unreadable safetensors header ({e}).") from e
    if not isinstance(header, dict):
        raise ValueError(f"{shown} has a malformed safetensors header (not a JSON object).")
    header.pop("__metadata__", None)
    try:
        shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in header.items()}
        spans = {k: (int(v["data_offsets"][1]) - int(v["data_offsets"][0]),
                     math.prod(shapes[k]) * _DTYPE_BYTES[v["dtype"]]) for k, v in header.items()}
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"{shown} has a malformed safetensors header ({type(e).__name__}: {e}).") from e
    bad = [k for k, (have, need) in spans.items() if have != need]
    if bad:
        raise ValueError(f"{shown} has tensors whose byte size does not fit their shape (first: {bad[:3]}).")
    if size != 8 + n + end:
        raise ValueError(f"{shown} is {size} bytes but its header describes {8 + n + end}: the file is truncated "
                         "or corrupt.")
    return shapes


def verify(path, entry, shown=None):
    """Raises ValueError unless the file at `path` is the checkpoint `entry` describes: its SHA-256 when
    known, else its size against its header and its tensor manifest. Messages name it `shown` (default: path)."""
    shown = shown or path
    if entry.sha256 is not None:
        digest = download.sha256_of(path)
        if digest != entry.sha256.lower():
            raise ValueError(f"{shown}: SHA-256 {digest} does not match {entry.name}'s {entry.sha256}.")
        return
    shapes = read_header(path, shown)
    if manifest_digest(shapes) != entry.manifest_sha256:
        fc = shapes.get("head.fc.weight")
        learned = sum(not k.endswith(IGNORED_SUFFIXES) for k in shapes)
        raise ValueError(f"{shown} does not hold {entry.name}: its {learned} tensors (classifier "
                         f"{fc and list(fc)}) differ in names or shapes from the checkpoint's ({entry.classes} "
                         "classes). Check the model name and tag.")


def cache_dir():
    """Where downloaded weights are kept: `$KERAS_HOME/models/keras_coatnet` (default `~/.keras/...`)."""
    return os.path.join(download.cache_root(), "models", "keras_coatnet")


def _manual_help(entry, url):
    folder = os.environ.get(DIR_ENV) or "<folder>"
    return (f"To install it by hand, download {url} and save it as {os.path.join(folder, entry.file_name)} with "
            f"{DIR_ENV}={folder}, or as {os.path.join(cache_dir(), entry.file_name)}.")


def fetch(model_name, weights="imagenet", include_top=True, classes=None, base_url=None, progress=True):
    """Returns the path of a verified local copy of the published `weights` of `model_name`.

    Looks in `$KERAS_COATNET_WEIGHTS_DIR`, then the cache, then downloads (from `base_url`, else
    `$KERAS_COATNET_WEIGHTS_URL`, else Hugging Face). A bad cached file is removed and fetched again; a bad
    file placed by hand raises ValueError. Raises download.DownloadError when offline, saying how to place
    the file by hand."""
    entry = get_weights(model_name, weights)
    if include_top and classes is not None and classes != entry.classes:
        log.info("%s has a %d-class classifier; with classes=%d it is replaced by a new one (pass "
                 "classes=%d to keep it, or include_top=False).", entry.name, entry.classes, classes, entry.classes)
    manual = os.environ.get(DIR_ENV)
    if manual and os.path.isfile(os.path.join(manual, entry.file_name)):
        path = os.path.join(manual, entry.file_name)
        verify(path, entry)
        return path
    path = os.path.join(cache_dir(), entry.file_name)
    if os.path.isfile(path):
        try:
            verify(path, entry)
            return path
        except ValueError as e:
            log.warning("Removing a bad cached file and downloading again: %s", e)
            os.remove(path)
    url = entry.url(base_url)
    log.info("Downloading %s to %s", url, path)
    try:
        return download.download(url, path, sha256=entry.sha256, validate=lambda p: verify(p, entry, url),
                                 progress=progress)
    except download.DownloadError as e:
        raise download.DownloadError(f"{e}. {_manual_help(entry, url)}") from e
    except ValueError as e:
        raise ValueError(f"The download of {entry.name} from {url} failed verification and was removed: {e} "
                         f"{_manual_help(entry, url)}") from e
