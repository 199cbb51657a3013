"""Representative images for full-integer calibration and for validation.

A calibration source is one of:
- ``random``: smooth random images (speed / size runs of untrained models, no labels);
- ``digits``: sklearn digits upscaled (train split calibrates, test split validates, labels known);
- a folder of images (`keras_coatnet.data_files.IMAGE_SUFFIXES`, searched recursively, hidden and system entries skipped as in training; DIR/CLASS/... are classes);
- a TFRecord file (or a folder / glob of them) with an encoded image under ``image``, ``image/encoded``
  or ``image_raw`` (and an optional int label under ``label`` or ``image/class/label``);
- a training config (.yaml / .yml / .json) as ``python -m training.train --config`` reads it: ``dataset``
  digits / folder / tfrecord with ``train_data`` (calibration; also held-out unless ``val_data`` is given)
  and ``tfrecord_label_offset``.
Calibration and held-out images are disjoint and sampled across classes: round-robin over the classes
(folder, label or digit) in a seeded random order. Images are RGB float32 in 0-255, resized to the export
size: [N, H, W, 3]; files are decoded by ``export.artifacts.decode_image``; an unreadable file is skipped with a
warning naming it.
"""

import collections
import dataclasses
import glob
import logging
from pathlib import Path

import numpy as np

from export.artifacts import decode_image
from export.errors import ExportError
from keras_coatnet.data_files import IMAGE_SUFFIXES, digits_arrays, tfrecord_files, visible

log = logging.getLogger("export")
TFRECORD_SUFFIXES = {".tfrecord", ".tfrecords", ".record"}
CONFIG_SUFFIXES = {".yaml", ".yml", ".json"}
IMAGE_KEYS = ("image", "image/encoded", "image_raw")
LABEL_KEYS = ("label", "image/class/label")
MIN_CALIBRATION = 8  # fewer images do not represent the data well enough to pick int8 ranges
MIN_HELDOUT = 1
SEED = 0
TFRECORD_SCAN = 20  # TFRecords: labels are read from the first TFRECORD_SCAN x (wanted images) records


@dataclasses.dataclass
class Samples:
    """Calibration and held-out images [N, H, W, 3] (0-255 float32), held-out labels [N] or None, and the
    class of every image (folder name / label) as ``calib_classes`` / ``heldout_classes``."""

    calib: np.ndarray
    heldout: np.ndarray
    heldout_labels: np.ndarray | None
    source: str
    calib_classes: list = dataclasses.field(default_factory=list)
    heldout_classes: list = dataclasses.field(default_factory=list)

    def per_class(self):
        """{"calibration": {class: count}, "heldout": {class: count}} (empty for unlabeled sources)."""
        count = lambda keys: dict(sorted(collections.Counter(str(k) for k in keys).items()))  # noqa: E731
        return {"calibration": count(self.calib_classes), "heldout": count(self.heldout_classes)}


def check_counts(num_calib, num_heldout, calibrated=True):
    """One-line ExportError for --num-calibration / --num-heldout below the minimums."""
    if calibrated and num_calib < MIN_CALIBRATION:
        raise ExportError(f"--num-calibration {num_calib} is below the minimum {MIN_CALIBRATION} (int8 / int16x8 "
                          "ranges are calibrated on these images)")
    if num_heldout < MIN_HELDOUT:
        raise ExportError(f"--num-heldout {num_heldout} is below the minimum {MIN_HELDOUT} (every file is "
                          "validated on held-out images)")


def stratified_split(keys, num_calib, num_heldout, seed=SEED):
    """Disjoint (calibration indices, held-out indices) into ``keys`` (one class key per item).

    Each class's items are shuffled (seeded); both sets take one item per class in turn (classes in a seeded
    random order), held-out first. With fewer items than asked for, held-out gets at most half."""
    rng = np.random.RandomState(seed)
    by_class = collections.defaultdict(list)
    for i, k in enumerate(keys):
        by_class[k].append(i)
    queues = [list(rng.permutation(by_class[k])) for k in sorted(by_class, key=str)]
    n = len(keys)
    if n < num_calib + num_heldout:
        num_heldout = min(num_heldout, max(MIN_HELDOUT, n // 2)) if num_calib else min(num_heldout, n)
        num_calib = min(num_calib, n - num_heldout)

    def take(count):
        picked = []
        while len(picked) < count and any(queues):
            for q in [queues[i] for i in rng.permutation(len(queues))]:
                if q and len(picked) < count:
                    picked.append(int(q.pop()))
        return picked

    held = take(num_heldout)
    return take(num_calib), held


def digits_split(size, split):
    """Digits (images [N, size, size, 3] 0-255 float32, labels [N]) for split "train" or "test".

    The training package's fixed split (``keras_coatnet.data_files.digits_arrays``), so the held-out images are the ones a
    model trained on digits never saw."""
    (xtr, ytr), (xte, yte) = digits_arrays()
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    x = np.repeat(np.asarray(x, np.float32), 3, axis=-1)  # [N, 8, 8, 3], 0-255
    return _resize(list(x), (size, size)), np.asarray(y)


def _resize(images, size):
    """Resizes a list of HxWx3 uint8/float arrays to [N, size[0], size[1], 3] float32."""
    import tensorflow as tf

    out = [tf.image.resize(np.asarray(im, np.float32), size, method="bilinear").numpy() for im in images]
    return np.clip(np.stack(out), 0, 255).astype(np.float32)


def _folder_catalog(folder):
    """(class key per file: its first folder under ``folder``, or "" for files directly in it; loader)."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and all(visible(part) for part in p.relative_to(root).parts))  # as training reads a folder
    keys = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "" for p in files]

    def load(indices):
        images, kept = [], []
        for i in indices:
            try:
                images.append(decode_image(files[i]))
                kept.append(i)
            except ValueError:  # skipped, as training skips them; an all-unreadable source is an error below
                log.warning("skipping unreadable image %s", files[i])
        return images, kept, None

    return keys, load


def _tfrecord_catalog(spec, scan, label_offset=0):
    """(label per record of the first ``scan`` records, or "" without labels; loader of images + labels)."""
    import tensorflow as tf

    files = tfrecord_files(spec)

    def examples(limit):
        try:
            for raw in tf.data.TFRecordDataset(files).take(limit):
                yield tf.train.Example.FromString(raw.numpy()).features.feature
        except tf.errors.OpError as e:
            raise ExportError(f"cannot read TFRecord {spec}: {e.message.splitlines()[0]}") from None

    def label(feats):
        key = next((k for k in LABEL_KEYS if k in feats), None)
        return int(feats[key].int64_list.value[0]) + int(label_offset) if key else ""

    keys = [label(f) if any(k in f for k in IMAGE_KEYS) else None for f in examples(scan)]

    def load(indices):
        wanted, images, kept, labels = set(indices), {}, [], {}
        for i, feats in enumerate(examples(max(indices, default=-1) + 1)):
            if i in wanted:
                try:
                    key = next(k for k in IMAGE_KEYS if k in feats)
                    images[i] = decode_image(feats[key].bytes_list.value[0])
                    labels[i] = keys[i]
                except (StopIteration, ValueError):
                    continue
        kept = [i for i in indices if i in images]
        labs = [labels[i] for i in kept]
        has_labels = bool(labs) and all(isinstance(v, int) and v >= 0 for v in labs)
        return [images[i] for i in kept], kept, (np.asarray(labs) if has_labels else None)

    return keys, load


def _catalog(spec, wanted, label_offset=0):
    path = Path(spec)
    if path.is_dir() and not any(p.suffix.lower() in TFRECORD_SUFFIXES for p in path.iterdir()):
        return _folder_catalog(path)
    if path.exists() or glob.glob(spec):
        keys, load = _tfrecord_catalog(spec, max(TFRECORD_SCAN * wanted, 1000), label_offset)
        valid = [i for i, k in enumerate(keys) if k is not None]
        sub_keys = [keys[i] for i in valid]

        def load_valid(indices):
            return load([valid[i] for i in indices])

        return sub_keys, lambda indices: _reindex(load_valid(indices), valid)
    raise FileNotFoundError(
        f"calibration source {spec!r} not found; give 'digits', an image folder, a TFRecord or a training config")


def _reindex(loaded, valid):
    images, kept, labels = loaded
    position = {v: i for i, v in enumerate(valid)}
    return images, [position[k] for k in kept], labels


def _read_training_config(path):
    """The data keys of a training config file (YAML or JSON, e.g. a run's resolved config.json), with the
    trainer's defaults; the digits preset is the default data set, another preset is refused (it is resolved
    only in the run's config.json)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ExportError(f"training config {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise ExportError(f"training config {path}: expected a mapping of options")
    if cfg.get("preset") not in (None, "digits") and "dataset" not in cfg:
        raise ExportError(f"training config {path} names preset {cfg['preset']!r}: pass the run's config.json "
                          "(output_dir/config.json), which has it resolved")
    return cfg


def training_config_source(path):
    """(calibration spec, held-out spec or None, tfrecord label offset) from a training config file."""
    cfg = _read_training_config(path)
    dataset = str(cfg.get("dataset", "digits"))
    if dataset == "digits":
        return "digits", None, 0
    if dataset in ("folder", "tfrecord"):
        if not cfg.get("train_data"):
            raise ExportError(f"training config {path}: dataset {dataset} has no train_data to calibrate on")
        return str(cfg["train_data"]), cfg.get("val_data"), int(cfg.get("tfrecord_label_offset") or 0)
    raise ExportError(f"training config {path}: dataset {dataset!r} cannot calibrate an export; give an image "
                      "folder or TFRecord as --calibration")


def load_samples(spec, size, num_calib=64, num_heldout=64, seed=SEED, label_offset=0, heldout_spec=None,
                 min_calib=0):
    """Calibration + held-out images for ``spec`` at ``size`` = (H, W); disjoint, stratified across classes.

    ``heldout_spec``: a second source for the held-out images (then ``spec`` gives only calibration images).
    Raises ExportError if no images are readable or fewer than ``min_calib`` calibration images remain."""
    spec = str(spec)
    if spec == "random":
        return random_samples(size, num_calib, num_heldout)
    if spec == "digits" or spec.startswith("digits:"):
        calib, calib_y = digits_split(size[0], "train")
        held, held_y = digits_split(size[0], "test")
        ci, _ = stratified_split(list(calib_y), num_calib, 0, seed)
        _, hi = stratified_split(list(held_y), 0, num_heldout, seed)
        calib, held = calib[ci], held[hi]
        if size[0] != size[1]:
            calib, held = _resize(list(calib), size), _resize(list(held), size)
        return Samples(calib, held, held_y[hi], "digits", [int(v) for v in calib_y[ci]],
                       [int(v) for v in held_y[hi]])
    path = Path(spec)
    if path.suffix.lower() in CONFIG_SUFFIXES and path.is_file():
        source, held_source, offset = training_config_source(path)
        samples = load_samples(source, size, num_calib, num_heldout, seed, offset, held_source, min_calib)
        samples.source = f"{spec} ({source}" + (f", held-out {held_source}" if held_source else "") + ")"
        return samples
    keys, load = _catalog(spec, num_calib + num_heldout, label_offset)
    if heldout_spec is None:
        ci, hi = stratified_split(keys, num_calib, num_heldout, seed)
        hkeys, hload = keys, load
    else:
        ci, _ = stratified_split(keys, num_calib, 0, seed)
        hkeys, hload = _catalog(str(heldout_spec), num_heldout, label_offset)
        _, hi = stratified_split(hkeys, 0, num_heldout, seed)
    calib, ci, _ = load(ci)
    held, hi, held_labels = hload(hi)
    if not calib and not held:
        raise ExportError(f"no readable images in calibration source {spec!r} "
                          f"(images: {sorted(IMAGE_SUFFIXES)}; TFRecord keys: {list(IMAGE_KEYS)})")
    if len(calib) < min_calib or not held:
        raise ExportError(f"calibration source {spec!r} gives {len(calib)} calibration and {len(held)} held-out "
                          f"images (disjoint); need at least {min_calib} and {MIN_HELDOUT}")
    return Samples(_resize(calib, size) if calib else np.zeros((0, *size, 3), np.float32), _resize(held, size),
                   held_labels, spec, [keys[i] for i in ci], [hkeys[i] for i in hi])


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
