"""Every write survives a full disk (issue 23): each write of ``python -m export`` and ``training.train`` is made to
fail in turn, with the real writer (TensorFlow, h5py, Pillow, Python) getting EFBIG from the kernel, and must end
in a non-zero exit, one line naming the file and the cause, no partial file under a final name, and the earlier
good files unchanged and loadable.

The fault: while one chosen call runs (the k-th atomic write of a file name, or a Keras writer), the process's
soft RLIMIT_FSIZE is lowered (SIGXFSZ ignored, so a write past it fails with EFBIG as on a full disk), then
restored. One subprocess walks all the steps of one command; steps run the CLI's ``main`` in-process.
Also here: readable lines for a library's error and a damaged file, and odd images in every image reader.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training_utils import REPO, python_env

WALK = r'''
import contextlib, fnmatch, hashlib, importlib, io, json, os, resource, shutil, signal, sys, time
from pathlib import Path

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


ATOMIC_FAULTS = []  # atomic_path is imported by name, so it is wrapped once, before export / training load
atomic = importlib.import_module("keras_coatnet.atomic")
plain_atomic_path = atomic.atomic_path


def atomic_path(*args, **kwargs):
    return (ATOMIC_FAULTS[-1].call if ATOMIC_FAULTS else plain_atomic_path)(*args, **kwargs)


atomic.atomic_path = atomic_path


class Fault:
    """Lowers the soft RLIMIT_FSIZE to ``limit`` bytes (or the size of file ``grow`` + ``limit``) during the
    ``nth`` call of ``target`` ("module:attr.attr") whose first argument's file name matches ``match``."""

    def __init__(self, target, nth=1, match="*", limit=16, grow=None):
        self.nth, self.match, self.limit, self.grow, self.calls, self.hit = nth, match, limit, grow, 0, False
        if target == "keras_coatnet.atomic:atomic_path":
            self.original, self.owner = plain_atomic_path, None
            ATOMIC_FAULTS.append(self)
            return
        module, attr = target.split(":")
        self.owner = importlib.import_module(module)
        *path, self.name = attr.split(".")
        for p in path:
            self.owner = getattr(self.owner, p)
        self.original = getattr(self.owner, self.name)

        def wrapper(*args, **kwargs):  # a function, so that it binds as a method when set on a class
            return self.call(*args, **kwargs)

        setattr(self.owner, self.name, wrapper)

    def remove(self):
        if self.owner is None:
            ATOMIC_FAULTS.remove(self)
        else:
            setattr(self.owner, self.name, self.original)

    def call(self, *args, **kwargs):
        first = next((a for a in args if isinstance(a, (str, os.PathLike))), None)
        if self.hit or not fnmatch.fnmatch(Path(first).name if first is not None else "", self.match):
            return self.original(*args, **kwargs)
        self.calls += 1
        if self.calls != self.nth:
            return self.original(*args, **kwargs)
        self.hit = True
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        limit = self.limit + (os.path.getsize(self.grow) if self.grow else 0)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        restore = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        try:
            result = self.original(*args, **kwargs)
        except BaseException:
            restore()
            raise
        if not hasattr(result, "__enter__"):
            restore()
            return result

        @contextlib.contextmanager
        def guarded():
            try:
                with result as value:
                    yield value
            finally:
                restore()

        return guarded()


def tree(root):
    """{relative path: sha256} of every file under root (hidden ones too)."""
    root = Path(root)
    if not root.exists():
        return None
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


spec = json.loads(sys.argv[1])
main = importlib.import_module(spec["cli"]).main
for step in spec["steps"]:
    for src, dst in step.get("copy", []):
        shutil.copytree(src, dst)
    fault = None
    if step.get("fault"):
        fault = Fault(**step["fault"])
    err, t0 = io.StringIO(), time.time()
    with contextlib.redirect_stderr(err):
        rc = main(step["argv"])
    if fault:
        fault.remove()
    lines = [l for l in err.getvalue().splitlines() if l.startswith(spec["prefix"])]
    print("STEP " + json.dumps({"name": step["name"], "rc": rc, "lines": lines, "hit": bool(fault and fault.hit),
                                "seconds": round(time.time() - t0, 1),
                                "trees": {k: tree(v) for k, v in step.get("trees", {}).items()}}), flush=True)
'''


def _walk(root, cli, prefix, steps, timeout=900, **env):
    """Runs WALK for ``steps``; returns {step name: {"rc", "lines", "hit", "seconds", "trees"}}, also kept in
    ROOT/walk.json."""
    spec = {"cli": cli, "prefix": prefix, "steps": steps}
    r = subprocess.run([sys.executable, "-c", WALK, json.dumps(spec)], cwd=REPO, env=python_env(**env),
                       capture_output=True, text=True, timeout=timeout)
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("STEP "):
            step = json.loads(line[5:])
            out[step["name"]] = step
    (Path(root) / "walk.json").write_text(json.dumps(out, indent=1))
    assert r.returncode == 0 and len(out) == len(steps), (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    return out


def _temporary(tree):
    """Names in a tree listing that are temporary (an atomic write's .NAME.*.tmp, the export's staging)."""
    return sorted(p for p in tree if any(part.startswith(".") for part in Path(p).parts))


def _scratch(tree):
    """The export's scratch files in a TMPDIR listing (TensorFlow's autograph files aside)."""
    return sorted(p for p in tree if p.startswith("coatnet_export_"))


# --- export ------------------------------------------------------------------------------------------------------

NAME = "coatnet_micro"
TFLITE = {"fp32": "_fp32.tflite", "fp16": "_fp16.tflite", "dynamic": "_dynamic_int8.tflite",
          "int8": "_int8.tflite", "int8_full": "_int8_full.tflite", "int16x8": "_int16x8.tflite",
          "qat_int8": "_qat_int8.tflite"}
ATOMIC = "keras_coatnet.atomic:atomic_path"
SCRATCH = "(a temporary file: free space in {tmp} or point TMPDIR at a larger disk)"

# step name -> (formats exported, fault, the file the line names: "out/NAME" or "scratch/NAME")
EXPORT_FAULTS = {
    "keras_saved_model": ("saved_model", {"target": ATOMIC, "match": "keras_saved_model"}, "scratch/keras_saved_model"),
    "view_saved_model": ("fp32", {"target": ATOMIC, "match": "saved_model_0"}, "scratch/saved_model_0"),
    "qat_saved_model": ("qat_int8", {"target": ATOMIC, "match": "sm"}, "scratch/sm"),
    **{fmt: (fmt, {"target": ATOMIC, "match": NAME + suffix}, "out/" + NAME + suffix)
       for fmt, suffix in TFLITE.items()},
    "labels": ("fp16", {"target": ATOMIC, "match": "labels.txt"}, "out/labels.txt"),
    "report": ("fp16", {"target": ATOMIC, "match": "report.json"}, "out/report.json"),
}


@pytest.fixture(scope="module")
def export_walk(tmp_path_factory):
    """A good export of every format into out/, then one export per EXPORT_FAULTS entry into the same out/."""
    import keras

    import keras_coatnet

    root = tmp_path_factory.mktemp("export_faults")
    keras.utils.set_random_seed(3)
    model = keras_coatnet.create_model(NAME, input_shape=(32, 32, 3), classes=10)
    model.save(root / "m.keras")
    (root / "tmp").mkdir()
    out = root / "out"

    def argv(formats):
        return [str(root / "m.keras"), str(out), "--formats", formats, "--calibration", "digits",
                "--num-calibration", "8", "--num-heldout", "8", "--qat-epochs", "0", "--no-strict", "--quiet"]

    trees = {"out": str(out), "tmp": str(root / "tmp")}
    steps = [{"name": "good", "argv": argv(",".join(["saved_model", *TFLITE])), "trees": trees}]
    steps += [{"name": name, "argv": argv(formats), "fault": fault, "trees": trees}
              for name, (formats, fault, _) in EXPORT_FAULTS.items()]
    return root, _walk(root, "export.__main__", "export:", steps, TMPDIR=str(root / "tmp"))


@pytest.mark.slow  # the walks: about 2 minutes each on 2 CPU cores
def test_the_good_export_writes_every_format(export_walk):
    root, steps = export_walk
    good = steps["good"]
    assert good["rc"] == 0 and good["lines"] == [], good
    files = good["trees"]["out"]
    assert {p.split("/")[0] for p in files} == {NAME + "_saved_model", "labels.txt", "report.json",
                                                *(NAME + s for s in TFLITE.values())}
    assert _scratch(good["trees"]["tmp"]) == []


@pytest.mark.slow  # the walks: about 2 minutes each on 2 CPU cores
@pytest.mark.parametrize("step", list(EXPORT_FAULTS))
def test_a_full_disk_at_each_export_write(export_walk, step):
    """Exit 2, one line 'export: error: cannot write FILE: File too large' (plus the TMPDIR hint for a scratch
    file), out/ exactly as the good export left it (nothing partial, nothing removed), no scratch left."""
    root, steps = export_walk
    r = steps[step]
    where = EXPORT_FAULTS[step][2]
    assert r["hit"], f"the fault at {where} never fired"
    assert r["rc"] == 2 and len(r["lines"]) == 1, r
    if where.startswith("scratch/"):
        tmp = root / "tmp"
        pattern = (re.escape(f"export: error: cannot write {tmp}/") + r"coatnet_export_\w+/"
                   + re.escape(f"{where[8:]}: File too large {SCRATCH.format(tmp=tmp)}"))
        assert re.fullmatch(pattern, r["lines"][0]), r["lines"][0]
    else:
        assert r["lines"][0] == f"export: error: cannot write {root / where}: File too large"
    assert r["trees"]["out"] == steps["good"]["trees"]["out"]
    assert _scratch(r["trees"]["tmp"]) == []


@pytest.mark.slow  # the walks: about 2 minutes each on 2 CPU cores
def test_the_earlier_export_still_loads_after_the_walk(export_walk):
    import numpy as np
    import tensorflow as tf

    from export import runtime

    root, steps = export_walk
    out = root / "out"
    image = np.full((1, 32, 32, 3), 128.0, np.float32)
    for suffix in TFLITE.values():
        it = runtime.load((out / (NAME + suffix)).read_bytes())
        assert runtime.predict(it, image).shape == (1, 10)
    sig = tf.saved_model.load(str(out / (NAME + "_saved_model"))).signatures["serving_default"]
    assert list(sig(image=tf.constant(image)).values())[0].shape == (1, 10)
    assert set(json.loads((out / "report.json").read_text())["formats"]) == {"saved_model", *TFLITE}
    assert (out / "labels.txt").read_text().split() == [str(i) for i in range(10)]


# --- training ----------------------------------------------------------------------------------------------------

CB = "keras.callbacks:"
# step name -> (fault, the file the line names, what the file is after the fault: "good" = the earlier run's
# file, byte for byte; "absent"; "rows" = history.csv holding whole rows only)
TRAIN_FAULTS = {
    "config": ({"target": ATOMIC, "match": "config.json"}, "config.json", "good"),
    "labels": ({"target": ATOMIC, "match": "labels.txt"}, "labels.txt", "good"),
    "last_model": ({"target": ATOMIC, "match": "last.keras"}, "last.keras", "good"),
    "best_model": ({"target": ATOMIC, "match": "best.keras"}, "best.keras", "good"),
    "best_json": ({"target": ATOMIC, "match": "best.json"}, "best.json", "absent"),
    "history": ({"target": ATOMIC, "match": "history.csv", "nth": 2}, "history.csv", "rows"),
    "tensorboard": ({"target": CB + "TensorBoard.on_epoch_end"}, "tensorboard", None),
    "curves": ({"target": ATOMIC, "match": "curves.png"}, "curves.png", "good"),
    "metrics": ({"target": ATOMIC, "match": "metrics.json"}, "metrics.json", "good"),
}
# the epoch-2 backup cut short in a fresh run, then the same command rerun: it resumes from the epoch-1 backup
BACKUP_FAULTS = {
    "backup": {"target": "training.callbacks:Backup.save", "nth": 2},
    "backup_weights": {"target": "keras:Model.save_weights", "match": "latest.weights.h5", "nth": 2},
    "backup_metadata": {"target": ATOMIC, "match": "training_metadata.json", "nth": 2},
}


@pytest.fixture(scope="module")
def train_walk(tmp_path_factory):
    """A good 2-epoch run in good/; a copy of it rerun with --overwrite per TRAIN_FAULTS entry (for as many epochs
    as its fault needs); a fresh 2-epoch run per BACKUP_FAULTS entry, then that command again without the fault."""
    root = tmp_path_factory.mktemp("train_faults")

    def argv(run, *extra, epochs=2):
        return ["--preset", "digits", "--output-dir", str(root / run), "--epochs", str(epochs), "--steps-per-epoch",
                "1", "--batch-size", "8", "--verbose", "0", *extra]

    def trees(run):
        return {"run": str(root / run)}

    steps = [{"name": "good", "argv": argv("good"), "trees": trees("good")}]
    for name, (fault, _, _) in TRAIN_FAULTS.items():
        steps.append({"name": name, "copy": [[str(root / "good"), str(root / name)]],
                      "argv": argv(name, "--overwrite", epochs=fault.get("nth", 1)), "fault": fault,
                      "trees": trees(name)})
    for name, fault in BACKUP_FAULTS.items():
        steps.append({"name": name, "argv": argv(name), "fault": fault, "trees": trees(name)})
        steps.append({"name": name + "_rerun", "argv": argv(name), "trees": trees(name)})
    return root, _walk(root, "training.train", "train:", steps)


@pytest.mark.slow  # the walks: about 2 minutes each on 2 CPU cores
def test_the_good_run_writes_every_file(train_walk):
    root, steps = train_walk
    good = steps["good"]
    assert good["rc"] == 0 and good["lines"] == [], good
    files = {p.split("/")[0] for p in good["trees"]["run"]}
    assert {"config.json", "labels.txt", "last.keras", "best.keras", "best.json", "history.csv", "tensorboard",
            "curves.png", "metrics.json"} <= files, files


def _loads(path):
    """Opens a run file as its reader does (raises if it is partial)."""
    path = Path(path)
    if path.suffix == ".keras":
        import keras

        import keras_coatnet  # noqa: F401

        keras.models.load_model(path, compile=False)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    elif path.suffix == ".csv":
        from training.callbacks import read_history

        return read_history(path)


@pytest.mark.slow  # the walks: about 2 minutes each on 2 CPU cores
@pytest.mark.parametrize("step", list(TRAIN_FAULTS))
def test_a_full_disk_at_each_training_write(train_walk, step):
    """A non-zero exit, one line 'train: error: cannot write FILE: File too large', no temporary or partial file,
    and the earlier run's file under fault unchanged and loadable."""
    root, steps = train_walk
    r, (_, where, after) = steps[step], TRAIN_FAULTS[step]
    run = root / step
    assert r["hit"], f"the fault at {where} never fired"
    assert r["rc"] != 0 and r["lines"] and r["lines"][-1].startswith("train: error: cannot write "), r
    assert len(r["lines"]) == 1 and r["lines"][0].endswith(": File too large"), r["lines"]
    named = r["lines"][0][len("train: error: cannot write "):-len(": File too large")]
    assert named == str(run / where) or run / where in Path(named).parents, named  # tensorboard: a file in it
    files = r["trees"]["run"]
    assert _temporary(files) == [], files
    if after == "good":
        assert files[where] == steps["good"]["trees"]["run"][where]
        _loads(run / where)
    elif after == "absent":
        assert where not in files
    elif after == "rows":
        assert _loads(run / where)["epoch"] == [0.0]
        assert (run / where).read_text().endswith("\n")
    for name in files:  # every file left under a final name is whole
        if "/" not in name:
            _loads(run / name)


@pytest.mark.slow  # the walks: about 2 minutes each on 2 CPU cores
@pytest.mark.parametrize("step", list(BACKUP_FAULTS))
def test_a_full_disk_at_the_backup_keeps_the_earlier_one_and_the_rerun_resumes(train_walk, step):
    root, steps = train_walk
    r, again = steps[step], steps[step + "_rerun"]
    assert r["hit"] and r["rc"] != 0 and len(r["lines"]) == 1, r
    assert re.fullmatch(re.escape(f"train: error: cannot write {root / step / 'backup'}/") + r"[\w.]+: File too large",
                        r["lines"][0]), r["lines"]
    assert again["rc"] == 0 and again["lines"] == [], again
    history = _loads(root / step / "history.csv")
    assert history["epoch"] == [0.0, 1.0]
    assert json.loads((root / step / "metrics.json").read_text())["resumed_from_epoch"] == 1


# --- readable lines: a library's error, a damaged file -----------------------------------------------------------

def _one_line(capsys):
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_a_tensorflow_error_reads_as_one_line_without_its_raw_text(capsys):
    import tensorflow as tf

    from keras_coatnet.cli import run_main

    def body(_):
        tf.add(tf.ones([1, 2]), tf.ones([1, 3]))  # TF's text: {{function_node __wrapped__AddV2_device_...}} ...

    assert run_main("export", lambda argv: argv, body, []) == 2
    line = _one_line(capsys)
    assert line.startswith("export: error: TensorFlow failed: Incompatible shapes: [1,2] vs. [1,3] ("), line
    assert line.endswith("rerun with --debug for the traceback)") and "{{" not in line and "[Op:" not in line
    with pytest.raises(tf.errors.InvalidArgumentError):
        run_main("export", lambda argv: argv, body, ["--debug"])


def test_an_h5py_error_names_h5py(tmp_path, capsys):
    import h5py

    from keras_coatnet.cli import run_main

    bad = tmp_path / "w.weights.h5"
    bad.write_bytes(b"not hdf5" * 100)
    assert run_main("train", lambda argv: argv, lambda _: h5py.File(bad, "r"), []) == 2
    assert _one_line(capsys).startswith("train: error: h5py failed: Unable to ")


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    import keras

    import keras_coatnet

    path = tmp_path_factory.mktemp("keras_file") / "m.keras"
    keras.utils.set_random_seed(3)
    keras_coatnet.create_model(NAME, input_shape=(32, 32, 3), classes=10).save(path)
    return path


def _cut_end(data):
    return data[:len(data) // 2]


def _zeroed_middle(data):
    mid = len(data) // 2
    return data[:mid] + bytes(4000) + data[mid + 4000:]


def _cut_weights_inside(data):
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            member = src.read(info.filename)
            dst.writestr(info, member[:len(member) // 2] if info.filename.endswith(".h5") else member)
    return out.getvalue()


@pytest.mark.parametrize("damage", [_cut_end, _zeroed_middle, _cut_weights_inside])
def test_a_damaged_keras_file_says_truncated_or_corrupt_and_leaves_no_folder(keras_file, tmp_path, capsys, damage):
    from export.__main__ import main

    bad = tmp_path / "bad.keras"
    bad.write_bytes(damage(keras_file.read_bytes()))
    out = tmp_path / "new_out"
    assert main([str(bad), str(out), "--formats", "fp32", "--quiet"]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"export: error: {bad} is truncated or corrupt ("), line
    assert not out.exists()


@pytest.mark.slow  # the walks: about 2 minutes each on 2 CPU cores
def test_a_damaged_tflite_file_says_truncated_or_corrupt(export_walk, tmp_path, capsys):
    """Cut short or with zeroed bytes beside its report.json (the manifest's size / sha256 differ); cut short
    alone (LiteRT refuses the flatbuffer)."""
    from examples.tflite_predict import main

    root, _ = export_walk
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 20, 30)).save(image)
    good = (root / "out" / (NAME + "_int8.tflite")).read_bytes()
    for folder, data, with_report in (("cut", _cut_end(good), True), ("zeroed", _zeroed_middle(good), True),
                                      ("alone", _cut_end(good), False)):
        (tmp_path / folder).mkdir()
        model = tmp_path / folder / (NAME + "_int8.tflite")
        model.write_bytes(data)
        for name in ("labels.txt", "report.json")[:2 if with_report else 1]:
            (tmp_path / folder / name).write_bytes((root / "out" / name).read_bytes())
        assert main([str(model), str(image)]) == 2
        line = _one_line(capsys)
        assert line.startswith(f"python -m examples.tflite_predict: error: {model} is truncated or corrupt"), line


# --- odd images: decoded right, or skipped and named -------------------------------------------------------------

RGB = (200, 40, 120)
GRAY16, GRAY8 = 40000, 156  # round(40000 / 257): 16 bits scaled to 8, not clipped to 255


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """odd/a/{cmyk.jpg, gray16.png, png_named.jpg}, odd/b/{plain.png, broken.jpg}; returns (root, {name:
    expected [8, 8, 3] uint8 RGB or None for the unreadable one})."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("odd")
    (root / "a").mkdir()
    (root / "b").mkdir()
    flat = np.broadcast_to(np.array(RGB, np.uint8), (8, 8, 3))
    ramp = np.stack([*np.meshgrid(np.arange(8) * 30, np.arange(8) * 20, indexing="ij"), np.full((8, 8), 7)], -1)
    ramp = ramp.astype(np.uint8)
    Image.fromarray(flat).convert("CMYK").save(root / "a" / "cmyk.jpg", "JPEG", quality=95)
    Image.fromarray(np.full((8, 8), GRAY16, np.uint16)).save(root / "a" / "gray16.png")
    Image.fromarray(ramp).save(root / "a" / "png_named.jpg", "PNG")
    Image.fromarray(ramp[::-1].copy()).save(root / "b" / "plain.png")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 4)
    expected = {"a/cmyk.jpg": flat, "a/gray16.png": np.full((8, 8, 3), GRAY8, np.uint8),
                "a/png_named.jpg": ramp, "b/plain.png": ramp[::-1], "b/broken.jpg": None}
    assert Image.open(root / "a" / "cmyk.jpg").mode == "CMYK" and Image.open(root / "a" / "gray16.png").mode == "I;16"
    return root, expected


def _close(got, want, name):
    import numpy as np

    tolerance = 4 if name.endswith("cmyk.jpg") else 1  # JPEG is lossy; 16 -> 8 bits rounds or truncates
    return got.shape == want.shape and np.abs(np.asarray(got, np.float64) - want).max() <= tolerance


def test_training_decodes_odd_images_right_and_skips_the_broken_one_by_name(odd_folder, caplog):
    from training.data import _folder_split, decode_file

    root, expected = odd_folder
    for name, want in expected.items():
        if want is not None:
            got = decode_file(str(root / name)).numpy()
            assert _close(got, want, name), (name, got[0, 0], want[0, 0])
    with caplog.at_level("WARNING"):
        split, classes, bad = _folder_split(str(root), {"scan_images": True})
    assert classes == ["a", "b"] and bad == [str(root / "b" / "broken.jpg")] and split.count == 4
    assert [r.getMessage() for r in caplog.records if "broken.jpg" in r.getMessage()] == [
        f"skipping unreadable image {root / 'b' / 'broken.jpg'}"]


def test_calibration_decodes_odd_images_right_and_skips_the_broken_one_by_name(odd_folder, caplog):
    from export.calibration import load_samples

    root, expected = odd_folder
    with caplog.at_level("WARNING"):
        samples = load_samples(str(root), (8, 8), num_calib=8, num_heldout=8)
    images = list(samples.calib) + list(samples.heldout)
    assert len(images) == 4
    for name, want in expected.items():
        if want is not None:
            assert sum(_close(im, want, name) for im in images) >= 1, name
    assert [r.getMessage() for r in caplog.records if "broken.jpg" in r.getMessage()] == [
        f"skipping unreadable image {root / 'b' / 'broken.jpg'}"]


def test_tflite_predict_decodes_odd_images_right_and_names_the_broken_one(odd_folder):
    from examples.tflite_predict import load_image

    root, expected = odd_folder
    for name, want in expected.items():
        if want is not None:
            assert _close(load_image(str(root / name), 8, 8)[0], want, name), name
    with pytest.raises(ValueError, match=re.escape(f"cannot read {root / 'b' / 'broken.jpg'}")):
        load_image(str(root / "b" / "broken.jpg"), 8, 8)
