"""Calibration sources: image folder, TFRecord, training config, digits; clear errors when empty."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from export.calibration import load_samples, representative
from export.errors import ExportError


def _write_images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray(rng.randint(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(folder / f"im{i}.png")


def test_folder_source_resizes_and_holds_out(tmp_path):
    _write_images(tmp_path / "imgs" / "cat", 5)
    s = load_samples(tmp_path / "imgs", (32, 32), num_calib=3, num_heldout=4)
    assert s.calib.shape == (3, 32, 32, 3) and s.heldout.shape == (2, 32, 32, 3)
    assert 0 <= s.calib.min() and s.calib.max() <= 255 and s.calib.std() > 10


def test_tfrecord_source_with_labels(tmp_path):
    path = tmp_path / "data.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(6):
            img = tf.io.encode_png(np.full((16, 16, 3), 40 * i, np.uint8)).numpy()
            ex = tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[img])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 3]))}))
            w.write(ex.SerializeToString())
    s = load_samples(path, (32, 32), num_calib=4, num_heldout=2)
    assert s.calib.shape == (4, 32, 32, 3)
    assert len(set(s.heldout_labels.tolist())) == 2  # two classes, not the first two records
    for image, label in zip(s.heldout, s.heldout_labels):  # record i: pixels 40 * i, label i % 3
        assert round(float(image.mean()) / 40) % 3 == label


def test_training_config_names_the_data(tmp_path):
    _write_images(tmp_path / "imgs", 3)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"dataset: folder\ntrain_data: {tmp_path / 'imgs'}\n")  # as training.train reads it
    assert load_samples(cfg, (32, 32), num_calib=2, num_heldout=1).calib.shape == (2, 32, 32, 3)


def test_digits_source_has_labels_and_generator_feeds_batches_of_one():
    s = load_samples("digits", (32, 32), num_calib=8, num_heldout=20)
    assert s.calib.shape == (8, 32, 32, 3) and s.heldout_labels.shape == (20,)
    assert set(np.unique(s.heldout_labels)) <= set(range(10))
    batches = list(representative(s.calib, "uint8")())
    assert len(batches) == 8 and batches[0][0].shape == (1, 32, 32, 3) and batches[0][0].dtype == np.uint8


def test_missing_and_unreadable_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_samples(tmp_path / "nope", (32, 32))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(ExportError, match="no readable images"):
        load_samples(tmp_path / "junk", (32, 32))


def test_folder_source_reads_a_folder_as_training_does(tmp_path):
    """Hidden and system folders (.ipynb_checkpoints, __MACOSX) are not classes, as in training.data."""
    for name in ("cat", "dog", ".ipynb_checkpoints", "__MACOSX"):
        _write_images(tmp_path / "imgs" / name, 4)
    s = load_samples(tmp_path / "imgs", (32, 32), num_calib=4, num_heldout=4)
    counts = s.per_class()
    assert set(counts["calibration"]) | set(counts["heldout"]) == {"cat", "dog"}
