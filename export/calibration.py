"""Representative images for full-integer calibration and for validation.

A calibration source is one of:
- ``random``: smooth random images (speed / size runs of untrained models, no labels);
- ``digits``: sklearn digits upscaled (train split calibrates, test split validates, labels known);
- a folder of images (.jpg .jpeg .png .bmp .gif .webp, searched recursively);
- a TFRecord file (or a folder / glob of them) with an encoded image under ``image``, ``image/encoded``
  or ``image_raw`` (and an optional int label under ``label`` or ``image/class/label``);
- a training config (.yaml / .yml / .json) whose ``data`` / ``dataset`` entry names one of the above.
Images are RGB float32 in 0-255, resized to the export size: [N, H, W, 3].
"""

import dataclasses
import glob
import json
from pathlib import Path

import numpy as np

from export.errors import ExportError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
TFRECORD_SUFFIXES = {".tfrecord", ".tfrecords", ".record"}
CONFIG_SUFFIXES = {".yaml", ".yml", ".json"}
IMAGE_KEYS = ("image", "image/encoded", "image_raw")
LABEL_KEYS = ("label", "image/class/label")


@dataclasses.dataclass
class Samples:
    """Calibration and held-out images [N, H, W, 3] (0-255 float32), labels [N] or None."""

    calib: np.ndarray
    heldout: np.ndarray
    heldout_labels: np.ndarray | None
    source: str


def digits_split(size, split):
    """Digits (images [N, size, size, 3] 0-255 float32, labels [N]) for split "train" or "test".

    Uses the training package's fixed split (``training.data.digits_arrays``) when it is importable, so the
    held-out images are the ones the model never trained on; else ``export.digits``."""
    try:
        from training.data import digits_arrays
    except Exception:  # noqa: BLE001 - training/ is optional for export
        from export.digits import load_digits_rgb

        x, y = load_digits_rgb(size, split=split)
        return np.asarray(x, np.float32), np.asarray(y)
    (xtr, ytr), (xte, yte) = digits_arrays()
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    x = np.repeat(np.asarray(x, np.float32), 3, axis=-1)  # [N, 8, 8, 3], 0-255
    return _resize(list(x), (size, size)), np.asarray(y)


def _resize(images, size):
    """Resizes a list of HxWx3 uint8/float arrays to [N, size[0], size[1], 3] float32."""
    import tensorflow as tf

    out = [tf.image.resize(np.asarray(im, np.float32), size, method="bilinear").numpy() for im in images]
    return np.clip(np.stack(out), 0, 255).astype(np.float32)


def _folder_images(folder, limit):
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images = []
    for path in files:
        if len(images) >= limit:
            break
        try:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
        except (UnidentifiedImageError, OSError):
            continue  # unreadable files are skipped; an all-unreadable folder is an error below
    return images, None


def _tfrecord_files(spec):
    path = Path(spec)
    if path.is_dir():
        return sorted(str(p) for p in path.iterdir() if p.suffix.lower() in TFRECORD_SUFFIXES)
    return sorted(glob.glob(spec)) if any(c in spec for c in "*?[") else [spec]


def _tfrecord_images(spec, limit):
    import tensorflow as tf

    images, labels = [], []
    files = _tfrecord_files(spec)
    try:
        for raw in tf.data.TFRecordDataset(files).take(limit):
            example = tf.train.Example.FromString(raw.numpy())
            feats = example.features.feature
            key = next((k for k in IMAGE_KEYS if k in feats), None)
            if key is None:
                continue
            images.append(tf.io.decode_image(feats[key].bytes_list.value[0], channels=3,
                                             expand_animations=False).numpy())
            lab = next((k for k in LABEL_KEYS if k in feats), None)
            labels.append(int(feats[lab].int64_list.value[0]) if lab else -1)
    except tf.errors.OpError as e:
        raise ExportError(f"cannot read TFRecord {spec}: {e.message.splitlines()[0]}") from None
    has_labels = labels and min(labels) >= 0
    return images, (np.asarray(labels) if has_labels else None)


def _config_source(path):
    text = Path(path).read_text()
    if Path(path).suffix.lower() == ".json":
        cfg = json.loads(text)
    else:
        import yaml

        cfg = yaml.safe_load(text)
    for keys in (("data", "dataset"), ("data", "source"), ("data",), ("dataset",)):
        node = cfg
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, str):
            return node
    raise ExportError(f"training config {path} has no data.dataset / dataset entry naming the images")


def load_samples(spec, size, num_calib=64, num_heldout=64):
    """Calibration + held-out images for ``spec`` at ``size`` = (H, W). Raises ExportError if none are readable."""
    spec = str(spec)
    if spec == "random":
        return random_samples(size, num_calib, num_heldout)
    if spec == "digits" or spec.startswith("digits:"):
        calib, _ = digits_split(size[0], "train")
        held, labels = digits_split(size[0], "test")
        if size[0] != size[1]:
            calib, held = _resize(calib, size), _resize(held, size)
        return Samples(calib[:num_calib], held[:num_heldout], labels[:num_heldout], "digits")
    path = Path(spec)
    if path.suffix.lower() in CONFIG_SUFFIXES and path.is_file():
        return load_samples(_config_source(path), size, num_calib, num_heldout)
    total = num_calib + num_heldout
    if path.is_dir() and not _tfrecord_files(spec):
        images, labels = _folder_images(path, total)
    elif path.exists() or glob.glob(spec):
        images, labels = _tfrecord_images(spec, total)
    else:
        raise FileNotFoundError(
            f"calibration source {spec!r} not found; give 'digits', an image folder, a TFRecord or a training config")
    if not images:
        raise ExportError(f"no readable images in calibration source {spec!r} "
                          f"(images: {sorted(IMAGE_SUFFIXES)}; TFRecord keys: {list(IMAGE_KEYS)})")
    x = _resize(images, size)
    if len(x) <= num_calib:  # too few to hold any out: validate on the calibration images
        return Samples(x, x, labels, spec)
    held_labels = labels[num_calib:] if labels is not None else None
    return Samples(x[:num_calib], x[num_calib:], held_labels, spec)


def random_samples(size, num_calib=8, num_heldout=8, seed=0):
    """Smooth random images (for speed/size runs of untrained models): Samples without labels."""
    rng = np.random.RandomState(seed)
    n = num_calib + num_heldout
    coarse = rng.uniform(0, 255, (n, 8, 8, 3)).astype(np.float32)
    x = _resize(list(coarse), size) * 0.7 + rng.uniform(0, 255 * 0.3, (n, *size, 3)).astype(np.float32)
    return Samples(x[:num_calib], x[num_calib:], None, "random")


def representative(images, dtype="float32"):
    """A zero-argument generator function yielding one [1, H, W, 3] input per image (converter API)."""

    def gen():
        for im in images:
            yield [im[None].astype(dtype)]

    return gen
