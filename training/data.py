"""Data sources (digits, image folder, TFRecord, TFDS) and tf.data pipelines.

A source yields `Split`s: an unbatched dataset of (raw, label) plus a `decode` fn mapping raw to a
(H, W, 3) float32 image in [0, 255]. `pipeline()` turns a Split into batches of
(images (B, S, S, 3) float32 0-255, one-hot labels (B, classes)).
"""
import dataclasses
import logging
import math
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from keras_coatnet.data_files import IMAGE_SUFFIXES, digits_arrays, tfrecord_files, visible
from training.augment import RandomResizedCrop, batch_augmenter, eval_resize, stream_seed

log = logging.getLogger("training")
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class Split:
    """An unbatched (raw, label) dataset, its size, and how to decode raw into an image."""
    ds: tf.data.Dataset
    count: int
    decode: Callable
    skipped: int = 0


@dataclasses.dataclass
class Data:
    train: Optional[Split]
    val: Optional[Split]
    test: Optional[Split]
    num_classes: int
    class_names: Optional[list] = None
    bad_files: list = dataclasses.field(default_factory=list)

    @property
    def skipped(self):
        """Unreadable images skipped, per split."""
        return {k: getattr(self, k).skipped for k in ("train", "val", "test") if getattr(self, k)}


def decode_bytes(raw):
    """Encoded JPEG/PNG/BMP/GIF bytes -> (H, W, 3) float32 in [0, 255]."""
    image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.cast(image, tf.float32)


def decode_file(path):
    """Image file path -> (H, W, 3) float32 in [0, 255]."""
    return decode_bytes(tf.io.read_file(path))


def to_rgb_float(image):
    """uint8/float (H, W, 1 or 3) -> (H, W, 3) float32."""
    image = tf.cast(image, tf.float32)
    return tf.cond(tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, 3]), lambda: image)


def _holdout(split, fraction):
    """Deterministic hold-out: (train, val) Splits; every k-th element (k = round(1/fraction)) is val."""
    k = max(2, round(1.0 / fraction))
    n_val = math.ceil(split.count / k)

    def is_val(i, *_):
        return i % k == 0

    def is_train(i, *_):
        return i % k != 0

    def drop_index(i, x):
        return x

    indexed = split.ds.enumerate()
    train = Split(indexed.filter(is_train).map(drop_index), split.count - n_val, split.decode, split.skipped)
    return train, Split(indexed.filter(is_val).map(drop_index), n_val, split.decode)


def _readable(ds, decode):
    """Decode every element once (parallel); return a bool array: element i is readable."""
    good = ds.enumerate().map(lambda i, x: (i, tf.shape(decode(x[0]))[0]), num_parallel_calls=AUTOTUNE)
    good = good.ignore_errors().map(lambda i, _: i).batch(4096)
    idx = np.concatenate([b for b in good.as_numpy_iterator()] or [np.zeros([0], np.int64)])
    total = int(ds.reduce(np.int64(0), lambda n, _: n + 1))
    mask = np.zeros([total], bool)
    mask[idx] = True
    return mask


# --- digits -----------------------------------------------------------------------------------



def load_digits_data(cfg):
    (xtr, ytr), (xte, yte) = digits_arrays()
    train = Split(tf.data.Dataset.from_tensor_slices((xtr, ytr)), len(ytr), to_rgb_float)
    test = Split(tf.data.Dataset.from_tensor_slices((xte, yte)), len(yte), to_rgb_float)
    val = None
    if cfg["val_fraction"] > 0:
        train, val = _holdout(train, cfg["val_fraction"])
    return Data(train, val, test, 10, [str(i) for i in range(10)])


# --- image folder -----------------------------------------------------------------------------



def list_image_folder(root):
    """(paths, labels, class_names) for root/class_name/image.ext, classes in sorted order.

    Hidden and system folders and files are skipped; a class folder with no image is an error."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = sorted(d for d in os.listdir(root) if visible(d) and os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(root, c))
                       if visible(f) and f.lower().endswith(IMAGE_SUFFIXES))
        paths += [os.path.join(root, c, f) for f in files]
        labels += [i] * len(files)
    with_images = sorted(set(labels))
    if not paths:
        raise ValueError(f"image folder {root} has no images: expected {root}/CLASS/*.jpg "
                         f"(extensions {', '.join(IMAGE_SUFFIXES)})")
    if len(with_images) < 2:
        raise ValueError(f"image folder {root} has images of only one class ({classes[with_images[0]]!r}); "
                         "need at least 2 class sub-folders with images")
    _check_no_empty_class(root, classes, labels)
    return paths, np.asarray(labels, np.int64), classes


def _check_no_empty_class(root, classes, labels, what="no image"):
    empty = [c for i, c in enumerate(classes) if i not in set(np.asarray(labels).tolist())]
    if empty:
        raise ValueError(f"class folder(s) {', '.join(empty)} in {root} have {what}; "
                         "remove the folder(s) or add images")


def _folder_split(root, cfg, class_names=None):
    """(Split, class_names, bad files) for a folder; unreadable files are dropped and counted."""
    paths, labels, classes = list_image_folder(root)
    if class_names is not None and classes != class_names:
        raise ValueError(f"classes in {root} {classes} differ from the training classes {class_names}")
    bad = []
    if cfg["scan_images"]:
        ok = _readable(tf.data.Dataset.from_tensor_slices((paths, labels)), decode_file)
        bad = [p for p, good in zip(paths, ok) if not good]
        paths, labels = [p for p, good in zip(paths, ok) if good], labels[ok]
        for p in bad:
            log.warning("skipping unreadable image %s", p)
        _check_no_empty_class(root, classes, labels, what="no readable image")
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    return Split(ds, len(paths), decode_file, skipped=len(bad)), classes, bad


def load_folder_data(cfg):
    if not cfg["train_data"] and not cfg["eval_only"]:
        raise ValueError("dataset=folder needs --train-data DIR (DIR/CLASS/*.jpg)")
    train = val = test = None
    classes, bad = None, []
    if cfg["train_data"]:
        train, classes, b = _folder_split(cfg["train_data"], cfg)
        bad += b
    if cfg["val_data"]:
        val, classes, b = _folder_split(cfg["val_data"], cfg, classes)
        bad += b
    elif train is not None and cfg["val_fraction"] > 0:
        train, val = _holdout(train, cfg["val_fraction"])
    if cfg["test_data"]:
        test, classes, b = _folder_split(cfg["test_data"], cfg, classes)
        bad += b
    return Data(train, val, test, len(classes), classes, bad)


# --- TFRecord ---------------------------------------------------------------------------------

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}




def _tfrecord_split(spec, cfg):
    """(Split, max label) for TFRecord shards of ImageNet-style examples."""
    files = tfrecord_files(spec)
    offset = int(cfg["tfrecord_label_offset"])

    def parse(record):
        ex = tf.io.parse_single_example(record, _FEATURES)
        return ex["image/encoded"], ex["image/class/label"] + offset

    ds = tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=AUTOTUNE)
    labels = np.concatenate(list(ds.map(lambda _, y: y).batch(65536).as_numpy_iterator()))
    skipped = 0
    if cfg["scan_images"]:
        skipped = int((~_readable(ds, decode_bytes)).sum())
        if skipped:
            log.warning("%s: %d unreadable images will be skipped", spec, skipped)
    return Split(ds, len(labels) - skipped, decode_bytes, skipped), int(labels.max(initial=-1))


def load_tfrecord_data(cfg):
    if not cfg["train_data"] and not cfg["eval_only"]:
        raise ValueError("dataset=tfrecord needs --train-data FILES (a file, directory or glob)")
    splits, max_label = {}, -1
    for name in ("train", "val", "test"):
        if cfg[f"{name}_data"]:
            splits[name], m = _tfrecord_split(cfg[f"{name}_data"], cfg)
            max_label = max(max_label, m)
    if "val" not in splits and "train" in splits and cfg["val_fraction"] > 0:
        splits["train"], splits["val"] = _holdout(splits["train"], cfg["val_fraction"])
    num_classes = int(cfg["num_classes"] or max_label + 1)
    if num_classes < 2:
        raise ValueError(f"TFRecords {cfg['train_data']} hold labels of only one class; need at least 2")
    return Data(splits.get("train"), splits.get("val"), splits.get("test"), num_classes)


# --- TFDS -------------------------------------------------------------------------------------

def load_tfds_data(cfg):
    name = cfg["dataset"].split(":", 1)[1]
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ValueError(f"dataset=tfds:{name} needs `pip install tensorflow-datasets`") from e
    builder = tfds.builder(name)
    builder.download_and_prepare()
    info = builder.info
    splits = info.splits

    def get(split):
        return Split(builder.as_dataset(split=split, as_supervised=True), splits[split].num_examples, to_rgb_float)

    train = get("train")
    test = get("test") if "test" in splits else None
    if "validation" in splits:
        val = get("validation")
    elif cfg["val_fraction"] > 0:
        train, val = _holdout(train, cfg["val_fraction"])
    else:
        val = None
    label = info.features["label"]
    return Data(train, val, test, label.num_classes, list(label.names))


def load_data(cfg):
    """Data for cfg['dataset'] in digits | folder | tfrecord | tfds:NAME."""
    name = cfg["dataset"]
    if name == "digits":
        return load_digits_data(cfg)
    if name == "folder":
        return load_folder_data(cfg)
    if name == "tfrecord":
        return load_tfrecord_data(cfg)
    if str(name).startswith("tfds:"):
        return load_tfds_data(cfg)
    raise ValueError(f"dataset={name!r}; allowed: digits, folder, tfrecord, tfds:NAME")


# --- pipeline ---------------------------------------------------------------------------------

def _options(deterministic):
    opts = tf.data.Options()
    opts.deterministic = bool(deterministic)
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return opts


def pipeline(split, cfg, global_batch, num_classes, training):
    """Batched (images (B,S,S,3) float32 0-255, one-hot labels (B,classes)) for a Split.

    training: shuffle, repeat forever, RandomResizedCrop + batch augmentation, drop remainder.
    Otherwise: one ordered pass, resize + center crop, last partial batch kept.
    """
    size = int(cfg["image_size"])
    ds = split.ds
    if training:
        crop = RandomResizedCrop(size, size, cfg["rrc_scale"], cfg["rrc_ratio"], seed=stream_seed(cfg["seed"], "crop"))
        ds = ds.shuffle(min(split.count, 16384), seed=cfg["seed"], reshuffle_each_iteration=True).repeat()
        ds = ds.map(lambda raw, y: (crop(split.decode(raw)), y), num_parallel_calls=AUTOTUNE)
        ds = ds.ignore_errors(log_warning=True).batch(global_batch, drop_remainder=True)
        ds = ds.map(batch_augmenter(cfg, num_classes), num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(lambda raw, y: (eval_resize(split.decode(raw), size, float(cfg["crop_pct"])),
                                    tf.one_hot(y, num_classes)), num_parallel_calls=AUTOTUNE)
        ds = ds.ignore_errors(log_warning=True).batch(global_batch)
    return ds.prefetch(AUTOTUNE).with_options(_options(cfg["deterministic"]))
