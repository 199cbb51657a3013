"""No silent wrong files: input convention read from the model and carried in the files, calibration that
represents the data, destination checked first, no stale files, temp folders removed, one image decoder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import keras_coatnet
from export import ExportError, export_model, runtime
from export.__main__ import main as export_cli

SIZE = 32
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _imagenet_normalize(raw):
    return ((np.asarray(raw, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def _raw_images(n=4, seed=0):
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, (n, 4, 4, 3)).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(c).resize((SIZE, SIZE), Image.BILINEAR)) for c in coarse])


def _tflite_outputs(path, images):
    it = runtime.load(Path(path).read_bytes())
    return runtime.predict(it, images)


def _rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def bare_model():
    """coatnet_micro without a Normalize layer (include_preprocessing=False), 10 classes, random weights."""
    keras.utils.set_random_seed(1)
    return keras_coatnet.create_model("coatnet_micro", input_shape=(SIZE, SIZE, 3), classes=10,
                                      include_preprocessing=False)


@pytest.fixture(scope="module")
def normalized_model():
    keras.utils.set_random_seed(3)
    return keras_coatnet.create_model("coatnet_micro", input_shape=(SIZE, SIZE, 3), classes=10)


def test_normalize_layer_is_found_by_type_not_by_name(tmp_path):
    """A Normalize layer with ImageNet statistics under a name without "preprocess" / "normaliz" in it: the
    uint8-input file bakes in nothing else, so raw bytes give the Keras model's output on raw pixels."""
    from keras_coatnet.builder import build_model
    from keras_coatnet.layers import Normalize
    from keras_coatnet.variants import get_entry

    keras.utils.set_random_seed(2)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = Normalize(IMAGENET_MEAN, IMAGENET_STD, name="input_scaling")(inp)
    model = build_model(get_entry("coatnet_micro")["config"], input_tensor=x, classes=10,
                        include_preprocessing=False, name="scaled_micro")
    report = export_model(model, tmp_path, formats=["fp32"], uint8_input=True, progress=None)
    raw = _raw_images()
    got = _tflite_outputs(report["formats"]["fp32"]["path"], raw)
    assert _rel_err(got, model.predict(raw.astype(np.float32), verbose=0)) < 1e-4
    assert report["input"]["values"] == "raw_0_255" and report["input"]["dtype"] == "uint8"
    assert report["input"]["normalization_in_model"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def test_model_without_normalize_layer_needs_its_mean_and_std(bare_model, tmp_path):
    with pytest.raises(ExportError, match="--input-mean"):
        export_model(bare_model, tmp_path / "a", formats=["fp32"], progress=None)
    assert export_cli([_saved(bare_model, tmp_path), str(tmp_path / "b"), "--formats", "fp32", "--quiet"]) == 2


def _saved(model, folder):
    path = Path(folder) / f"{model.name}.keras"
    if not path.exists():
        model.save(path)
    return str(path)


def test_imagenet_convention_is_baked_into_uint8_input(bare_model, tmp_path):
    report = export_model(bare_model, tmp_path, formats=["fp32"], uint8_input=True, input_mean=IMAGENET_MEAN,
                          input_std=IMAGENET_STD, progress=None)
    raw = _raw_images()
    got = _tflite_outputs(report["formats"]["fp32"]["path"], raw)
    assert _rel_err(got, bare_model.predict(_imagenet_normalize(raw), verbose=0)) < 1e-4


def test_float_file_says_it_wants_normalized_input_and_tflite_predict_normalizes(bare_model, tmp_path):
    from examples.tflite_predict import predict
    from export.artifacts import read

    report = export_model(bare_model, tmp_path, formats=["fp32"], input_mean=IMAGENET_MEAN,
                          input_std=IMAGENET_STD, labels=[f"c{i}" for i in range(10)], progress=None)
    expected = {"values": "normalized", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "dtype": "float32"}
    assert {k: report["input"][k] for k in expected} == expected
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["input"] == report["input"]
    path = report["formats"]["fp32"]["path"]
    meta = read(Path(path).read_bytes())
    assert meta["input"] == report["input"] and meta["labels"] == [f"c{i}" for i in range(10)]
    raw = _raw_images(1, seed=3)
    Image.fromarray(raw[0]).save(tmp_path / "im.png")
    result = predict(path, str(tmp_path / "im.png"), top=10)
    ref = bare_model.predict(_imagenet_normalize(raw), verbose=0)[0]
    got = np.array([score for _, score in sorted(result["top"], key=lambda t: int(t[0][1:]))])
    assert _rel_err(got, ref) < 1e-4


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from examples.tflite_predict import load_image
    from export.artifacts import decode_image

    gray8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (SIZE, 1))[:, :SIZE]
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 16-bit grayscale
    Image.fromarray(gray8).convert("P").save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    np.testing.assert_array_equal(decode_image(tmp_path / "g16.png"), np.repeat(gray8[..., None], 3, -1))
    np.testing.assert_array_equal(decode_image(str(tmp_path / "pal.png")), np.repeat(gray8[..., None], 3, -1))
    np.testing.assert_array_equal(load_image(str(tmp_path / "g16.png"), SIZE, SIZE)[0, :, :, 0], gray8)


def test_sixteen_bit_png_calibration(tmp_path):
    from export.calibration import load_samples

    for cls, level in (("dark", 40), ("light", 200)):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((SIZE, SIZE), (level + i) * 257, np.uint16)).save(tmp_path / cls / f"{i}.png")
    s = load_samples(tmp_path, (SIZE, SIZE), num_calib=6, num_heldout=4)
    assert sorted(np.unique(np.concatenate([s.calib, s.heldout]))) == [40, 41, 42, 43, 44, 200, 201, 202, 203, 204]


# --- calibration that represents the data (problems 1, 2, 8) --------------------------------------------------

def test_calibration_and_heldout_are_disjoint_and_cover_every_class(tmp_path):
    from examples.shapes import write_shapes_folder
    from export.calibration import load_samples

    write_shapes_folder(tmp_path, per_class=12, size=SIZE)  # 36 images, fewer than 64 + 64
    s = load_samples(tmp_path, (SIZE, SIZE))
    flat_c, flat_h = s.calib.reshape(len(s.calib), -1), s.heldout.reshape(len(s.heldout), -1)
    assert not any((flat_c == h).all(axis=1).any() for h in flat_h)  # no held-out image is a calibration image
    assert len(s.calib) + len(s.heldout) == 36
    assert s.per_class() == {"calibration": {"circle": 6, "square": 6, "triangle": 6},
                             "heldout": {"circle": 6, "square": 6, "triangle": 6}}
    few = load_samples(tmp_path, (SIZE, SIZE), num_calib=9, num_heldout=3)
    assert few.per_class() == {"calibration": {"circle": 3, "square": 3, "triangle": 3},
                               "heldout": {"circle": 1, "square": 1, "triangle": 1}}
    again = load_samples(tmp_path, (SIZE, SIZE), num_calib=9, num_heldout=3)
    np.testing.assert_array_equal(few.calib, again.calib)  # seeded


def test_digits_sets_cover_every_digit():
    from export.calibration import load_samples

    s = load_samples("digits", (SIZE, SIZE), num_calib=20, num_heldout=10)
    assert s.per_class()["calibration"] == {str(d): 2 for d in range(10)}
    assert sorted(s.heldout_labels.tolist()) == list(range(10))


def _tfrecord(path, labels):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for i, label in enumerate(labels):
            img = tf.io.encode_png(np.full((16, 16, 3), 10 * i, np.uint8)).numpy()
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[img])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))})
            ).SerializeToString())


def test_training_config_is_read_as_training_reads_it(tmp_path):
    """dataset: folder + train_data; dataset: tfrecord with tfrecord_label_offset -1 (1-based shards)."""
    from examples.shapes import write_shapes_folder
    from export.calibration import load_samples

    write_shapes_folder(tmp_path / "shapes", per_class=4, size=SIZE)
    cfg = tmp_path / "folder.yaml"
    cfg.write_text(f"dataset: folder\ntrain_data: {tmp_path / 'shapes'}\nimage_size: 32\n")
    s = load_samples(cfg, (SIZE, SIZE), num_calib=6, num_heldout=3)
    assert s.per_class()["calibration"] == {"circle": 2, "square": 2, "triangle": 2}
    _tfrecord(tmp_path / "shard.tfrecord", [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3])  # 1-based labels
    cfg = tmp_path / "tfr.yaml"
    cfg.write_text(f"dataset: tfrecord\ntrain_data: {tmp_path / 'shard.tfrecord'}\ntfrecord_label_offset: -1\n")
    s = load_samples(cfg, (SIZE, SIZE), num_calib=6, num_heldout=6)
    assert sorted(s.heldout_labels.tolist()) == [0, 0, 1, 1, 2, 2]
    for image, label in zip(s.heldout, s.heldout_labels):  # record i holds pixel value 10 * i, label i % 3
        assert int(round(image.mean() / 10)) % 3 == label


@pytest.mark.parametrize("args, message", [
    (["--num-calibration", "0"], "--num-calibration 0 is below the minimum 8"),
    (["--num-calibration", "7"], "--num-calibration 7 is below the minimum 8"),
    (["--num-heldout", "0"], "--num-heldout 0 is below the minimum 1"),
])
def test_too_few_calibration_or_heldout_images_is_one_line(normalized_model, tmp_path, capsys, args, message):
    model = _saved(normalized_model, tmp_path)
    code = export_cli([model, str(tmp_path / "out"), "--formats", "int8", "--calibration", "digits", "--quiet",
                       *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not list((tmp_path / "out").glob("*.tflite"))


# --- output folders (problems 3, 6, 7) -----------------------------------------------------------------------

def test_stale_files_of_an_earlier_export_are_removed(normalized_model, tmp_path):
    old = {"coatnet_micro_int8.tflite": b"other model", "old_name_fp16.tflite": b"older", "notes.txt": b"mine"}
    for f, data in old.items():
        (tmp_path / f).write_bytes(data)
    (tmp_path / "report.json").write_text(json.dumps({"files": {"old_name_fp16.tflite": {}, "../x": {}}}))
    # the fp32 file fails validation (impossible threshold): the export writes no model file at all
    with pytest.raises(Exception, match="fp32"):
        export_model(normalized_model, tmp_path, formats=["fp32"], thresholds={"fp32": -1.0}, progress=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.txt", "notes.txt", "report.json"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(report["removed_stale_files"]) == ["coatnet_micro_int8.tflite", "old_name_fp16.tflite"]
    report = export_model(normalized_model, tmp_path, formats=["fp32"], progress=None)
    files = report["files"]
    assert sorted(files) == ["coatnet_micro_fp32.tflite", "labels.txt", "report.json"]
    import hashlib

    data = (tmp_path / "coatnet_micro_fp32.tflite").read_bytes()
    assert files["coatnet_micro_fp32.tflite"] == {"bytes": len(data), "sha256": hashlib.sha256(
        b"coatnet_micro_fp32.tflite\0" + data).hexdigest()}


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_bad_destination_is_refused_before_converting(normalized_model, tmp_path, capsys, where):
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "out"
    t0 = time.time()
    code = export_cli([_saved(normalized_model, tmp_path), str(out), "--formats", "fp32", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is a file" in err[0], err
    assert time.time() - t0 < 5  # before the model is even loaded
    assert (tmp_path / "taken").read_text() == "a file"


def test_sigterm_removes_temporary_folders(normalized_model, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "export", _saved(normalized_model, tmp_path), str(out),
                             "--formats", "fp32,fp16"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list(tmp.glob("coatnet_export_*/saved_model_0")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read()[-3000:]
    assert not list(tmp.glob("coatnet_export_*")), list(tmp.iterdir())
    assert not list(out.glob(".coatnet_export_*")) and not list(out.glob("*.tflite"))


# --- the artifact written is the one validated; layers known by class, not by name (issue 15) ---------------

def test_saved_model_written_is_the_one_validated(normalized_model, tmp_path, monkeypatch):
    """The SavedModel format is exported once: the folder that was validated is the one published."""
    from export.graph import Serving

    written = []
    original = Serving.write_saved_model
    monkeypatch.setattr(Serving, "write_saved_model", lambda self, path: written.append(path) or original(self, path))
    report = export_model(normalized_model, tmp_path, formats=["saved_model"], progress=None)
    assert len(written) == 1, written
    sm = tmp_path / "coatnet_micro_saved_model"
    assert report["formats"]["saved_model"]["path"] == str(sm)
    assert report["files"]["coatnet_micro_saved_model"]["bytes"] == report["formats"]["saved_model"]["size_bytes"]
    import tensorflow as tf

    raw = _raw_images(2).astype(np.float32)
    sig = tf.saved_model.load(str(sm)).signatures["serving_default"]
    got = np.concatenate([sig(image=tf.constant(x[None]))["probabilities"].numpy() for x in raw])
    assert _rel_err(got, np.asarray(normalized_model(raw, training=False))) < 1e-4


def test_layers_are_known_by_class_not_by_class_name():
    """Layers merely *named* like keras_coatnet's (a user class called Stem) are not taken for a CoAtNet."""
    from keras import layers

    from export.model_input import check_coatnet

    class Stem(layers.Layer):
        def call(self, x):
            return x

    class MBConvBlock(Stem):
        pass

    inp = keras.Input((SIZE, SIZE, 3))
    out = layers.GlobalAveragePooling2D()(MBConvBlock()(Stem()(inp)))
    with pytest.raises(ExportError, match="not a keras_coatnet CoAtNet"):
        check_coatnet(keras.Model(inp, out))


def test_cli_flags_reach_export_model_as_its_options():
    """Every CLI flag sets the ExportRequest field it is declared on (export.request states the options once)."""
    from export.__main__ import parse_args
    from export.request import ExportRequest, cli_options

    args = parse_args(["m.keras", "out", "--formats", "fp32,int8", "--calibration", "digits", "--input-size", "64",
                       "96", "--uint8-input", "--io-type", "uint8", "--num-calibration", "16", "--num-heldout", "8",
                       "--no-optimize", "--gelu", "tanh", "--attention", "per_head", "--rel-bias", "table",
                       "--labels", "l.txt", "--no-strict", "--threshold", "int8=0.9", "--threshold", "fp32=0.01",
                       "--name", "n", "--qat-epochs", "3", "--input-mean", "0.1", "0.2", "0.3", "--input-std", "1",
                       "2", "3", "--seed", "7"])
    request = ExportRequest(**{dest: getattr(args, dest) for _, dest, *_ in cli_options()}, progress=None)
    assert request == ExportRequest(
        formats=["fp32", "int8"], calibration_source="digits", input_size=(64, 96), uint8_input=True, io_type="uint8",
        num_calib=16, num_heldout=8, optimize=False, gelu="tanh", attention="per_head", rel_bias="table",
        labels="l.txt", strict=False, thresholds={"int8": 0.9, "fp32": 0.01}, name="n", qat_epochs=3,
        input_mean=[0.1, 0.2, 0.3], input_std=[1.0, 2.0, 3.0], seed=7, progress=None)
    defaults = ExportRequest(**{dest: getattr(parse_args(["m", "o"]), dest) for _, dest, *_ in cli_options()})
    assert defaults == ExportRequest()  # the CLI's defaults are export_model's
    with pytest.raises(ExportError, match="bad --threshold 'int8'"):
        ExportRequest(thresholds=["int8"])
    with pytest.raises(TypeError, match="unknown option"):
        export_model("m.keras", "out", calibration="digits")


# --- a full disk and a damaged model file read as one human line (issue 23, export part) -------------------------

def _limited_export(args, limit_bytes, env=None):
    """`python -m export ARGS` with a file-size limit (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a write past the
    limit fails with EFBIG, as on a full disk)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "export", *args], preexec_fn=limit, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


def test_a_full_disk_names_the_file_and_the_cause_and_keeps_the_earlier_export(normalized_model, tmp_path):
    """The fp32 file is ~1 MB: under a 300 KB limit the export fails with exit 2 and one line naming the file
    and 'File too large'; the earlier export in OUT_DIR stays whole, and no partial file appears."""
    model_path = _saved(normalized_model, tmp_path)
    out = tmp_path / "out"
    assert export_cli([model_path, str(out), "--formats", "fp16", "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = _limited_export([model_path, str(out), "--formats", "fp32", "--quiet"], 300_000, {"TMPDIR": str(tmp)})
    err = [line for line in r.stderr.splitlines() if line.startswith("export:")]  # TF's C++ log lines aside
    assert r.returncode == 2 and len(err) == 1, r.stderr[-2000:]
    assert "File too large" in err[0] and f"cannot write {tmp}" in err[0] and "TMPDIR" in err[0], err[0]
    assert "function_node" not in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no partial file, nothing lost
    assert not list(tmp.glob("coatnet_export_*"))


def test_a_truncated_keras_file_says_so_and_leaves_no_new_folder(normalized_model, tmp_path, capsys):
    data = Path(_saved(normalized_model, tmp_path)).read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(data[:len(data) // 2])
    out = tmp_path / "new_out"
    assert export_cli([str(cut), str(out), "--formats", "fp32", "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"export: error: {cut} is truncated or corrupt (")
    assert not out.exists()
