"""Data sources and tf.data pipelines: image folder, TFRecord, digits, augmentation."""
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_coatnet.data_files import digits_arrays
from tests.training_utils import image_bytes, write_image_folder
from training import config as config_lib
from training.augment import RandomResizedCrop, batch_augmenter
from training.data import load_data, load_folder_data, load_tfrecord_data, pipeline


def _cfg(**kw):
    return config_lib.resolve({"image_size": 32, **kw})


def _truncated_jpeg():
    return image_bytes("JPEG", seed=7)[:200]


def test_image_folder_skips_and_counts_corrupt_files(tmp_path):
    root = write_image_folder(str(tmp_path / "imgs"), per_class=(6, 4), corrupt=[
        (0, "garbage.jpg", b"this is not an image" * 10), (1, "truncated.jpg", _truncated_jpeg())])
    data = load_folder_data(_cfg(dataset="folder", train_data=root, val_fraction=0.25))
    assert data.class_names == ["class_0", "class_1"]
    assert data.num_classes == 2
    assert sorted(os.path.basename(p) for p in data.bad_files) == ["garbage.jpg", "truncated.jpg"]
    assert data.skipped == {"train": 2, "val": 0}
    assert data.train.count + data.val.count == 10
    assert data.val.count == 3  # every 4th of the 10 readable files

    batches = list(pipeline(data.val, _cfg(), 2, 2, training=False).as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.shape == (3, 32, 32, 3) and labels.shape == (3, 2)
    assert 0.0 <= images.min() and images.max() <= 255.0 and images.std() > 10
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)

    x, y = next(iter(pipeline(data.train, _cfg(), 4, 2, training=True)))
    assert x.shape == (4, 32, 32, 3) and y.shape == (4, 2)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_folder_data(_cfg(dataset="folder", train_data=str(tmp_path / "missing")))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        load_folder_data(_cfg(dataset="folder", train_data=str(tmp_path / "empty")))
    one = write_image_folder(str(tmp_path / "one"), per_class=(3,))
    with pytest.raises(ValueError, match="only one class"):
        load_folder_data(_cfg(dataset="folder", train_data=one))
    with pytest.raises(ValueError, match="needs --train-data"):
        load_data(_cfg(dataset="folder"))


def _example(encoded, label):
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_tfrecord_shards_with_a_corrupt_record(tmp_path):
    # ImageNet-style 1-based labels 1..3 in two shards; one record holds garbage bytes.
    records = [(image_bytes("JPEG" if i % 2 else "PNG", seed=i), 1 + i % 3) for i in range(11)]
    records.append((b"\x00corrupt" * 20, 2))
    for shard in range(2):
        with tf.io.TFRecordWriter(str(tmp_path / f"train-{shard:05d}-of-00002")) as w:
            for enc, label in records[shard::2]:
                w.write(_example(enc, label))
    cfg = _cfg(dataset="tfrecord", train_data=str(tmp_path / "train-*"), tfrecord_label_offset=-1, val_fraction=0)
    data = load_tfrecord_data(cfg)
    assert data.num_classes == 3
    assert data.skipped == {"train": 1}
    assert data.train.count == 11
    batches = list(pipeline(data.train, {**cfg, "epochs": 1}, 4, 3, training=False).as_numpy_iterator())
    labels = np.concatenate([b[1] for b in batches]).argmax(axis=1)
    assert len(labels) == 11  # the corrupt record is skipped, not fatal
    assert sorted(labels.tolist()) == sorted((i % 3) for i in range(11))

    with pytest.raises(FileNotFoundError, match="no TFRecord files"):
        load_tfrecord_data({**cfg, "train_data": str(tmp_path / "nothing-*")})


def test_digits_fixed_held_out_split():
    (xtr, ytr), (xte, yte) = digits_arrays()
    (xtr2, _), (xte2, yte2) = digits_arrays()
    assert len(yte) == 360 and len(ytr) == 1437
    np.testing.assert_array_equal(xte, xte2)
    np.testing.assert_array_equal(yte, yte2)
    assert np.bincount(yte).min() >= 35  # stratified: every class about 36 times
    assert xtr.shape[1:] == (8, 8, 1) and xtr.max() == 255.0
    train_rows = {r.tobytes() for r in xtr}
    assert sum(r.tobytes() in train_rows for r in xte) < 5  # (digits has a few exact duplicates)

    data = load_data(_cfg(dataset="digits", val_fraction=0.1))
    assert (data.train.count, data.val.count, data.test.count) == (1293, 144, 360)


def test_random_resized_crop():
    image = tf.random.uniform([40, 40, 3], 0, 255)
    full = RandomResizedCrop(40, 40, scale=(1.0, 1.0), ratio=(1.0, 1.0))(image)
    np.testing.assert_allclose(full.numpy(), image.numpy(), atol=1e-3)  # whole image, same size
    ramp = tf.tile(tf.range(64, dtype=tf.float32)[None, :, None], [64, 1, 3])[None]
    crops = RandomResizedCrop(16, 16, scale=(0.25, 0.25), ratio=(1.0, 1.0), seed=1)(tf.tile(ramp, [8, 1, 1, 1]))
    assert crops.shape == (8, 16, 16, 3)
    widths = (crops[:, 0, -1, 0] - crops[:, 0, 0, 0]).numpy()
    np.testing.assert_allclose(widths, 30.0, atol=0.5)  # 32-px box: 16 samples 2 px apart (antialiased edges)
    starts = crops[:, 0, 0, 0].numpy() - 0.5
    assert len(set(starts.round(3))) > 1 and starts.min() >= 0 and starts.max() <= 32  # random offsets


def test_mixup_makes_soft_labels():
    cfg = _cfg(mixup_alpha=0.8, cutmix_alpha=1.0, mix_switch_prob=0.5, randaugment_ops=2, random_erasing=0.5)
    images = tf.random.uniform([8, 32, 32, 3], 0, 255)
    x, y = batch_augmenter(cfg, 5)(images, tf.constant([0, 1, 2, 3, 4, 0, 1, 2]))
    assert x.shape == (8, 32, 32, 3) and y.shape == (8, 5)
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert (y.numpy().max(axis=1) < 0.999).any()  # mixed, not one-hot
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 255.0


def _crop_boxes(seed, n=400, size=64):
    """(y0, x0, h, w) of n crops drawn inside tf.data from an image whose pixels encode (row, col)."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype("float32")
    crop = RandomResizedCrop(size, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=seed)
    ds = tf.data.Dataset.from_tensors(image).repeat(n).map(crop.crop_one)
    boxes = np.array([(o[..., 0].min(), o[..., 1].min(), o[..., 0].max(), o[..., 1].max())
                      for o in ds.as_numpy_iterator()])
    return boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]


def test_random_resized_crop_draws_are_independent_inside_tf_data():
    y0, x0, h, w = _crop_boxes(seed=0)
    assert abs(np.corrcoef(h * w, w / np.maximum(h, 1))[0, 1]) < 0.1  # area vs aspect ratio
    # Offsets as a fraction of their range (each uniform; raw offsets correlate through the box size).
    free = (h < 63) & (w < 63)
    assert abs(np.corrcoef(y0[free] / (63 - h[free]), x0[free] / (63 - w[free]))[0, 1]) < 0.1
    assert np.mean(y0 == x0) < 0.1  # not on the diagonal (same offset both ways; ~7% by chance)
    again = _crop_boxes(seed=0)
    np.testing.assert_array_equal(np.stack([y0, x0, h, w]), np.stack(again))  # reproducible from the seed


def test_augmentation_layers_draw_from_different_streams():
    import keras

    cfg = _cfg(hflip=True, randaugment_ops=2, random_erasing=0.5, mixup_alpha=0.8, cutmix_alpha=1.0)
    augment = batch_augmenter(cfg, 5)
    layers = augment.layers
    assert len(layers) >= 5, layers  # flip, RandAugment (and each of its ops), erasing, MixUp, CutMix
    draws = {lay.name: keras.ops.convert_to_numpy(keras.random.uniform([16], seed=lay.generator))
             for lay in layers}
    assert len(draws) == len(layers)
    names = sorted(draws)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.allclose(draws[a], draws[b]), (a, b)
