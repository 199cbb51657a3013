"""Where training and export find their images: sklearn's digits (the demo data set, with its fixed test
split), the entries of an image folder, and TFRecord file lists. Shared by `training` and `export`."""

import os

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")  # what tf.io.decode_image reads
DIGITS_TEST_FRACTION = 0.2  # fixed held-out digits test split: 360 of 1797 images, stratified, seed 0


def digits_arrays():
    """sklearn's 8x8 digits as ((train_x, train_y), (test_x, test_y)); x (N, 8, 8, 1) in [0, 255].

    The test split is fixed: 20% per class, chosen with seed 0.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images[..., None] * (255.0 / 16.0)).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, d.target.astype(np.int64), test_size=DIGITS_TEST_FRACTION,
                                          stratify=d.target, random_state=0)
    return (xtr, ytr), (xte, yte)


def visible(name):
    """False for hidden and system entries (.ipynb_checkpoints, .DS_Store, ._x.jpg, __MACOSX)."""
    return not name.startswith((".", "__MACOSX"))


def tfrecord_files(spec):
    """Sorted TFRecord files from a file, a directory (all files in it) or a glob pattern (gs:// too)."""
    import tensorflow as tf

    if tf.io.gfile.isdir(spec):
        files = sorted(os.path.join(spec, f) for f in tf.io.gfile.listdir(spec) if not f.startswith("."))
    else:
        files = sorted(tf.io.gfile.glob(spec))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {spec}")
    return files
