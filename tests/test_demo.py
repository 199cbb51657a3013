"""`make demo`: the fast demo end to end in a subprocess, its report checked against the files it wrote."""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from examples.rundir import new_run_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "examples.demo", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_run_dir_is_new_every_time(tmp_path):
    first = new_run_dir(str(tmp_path), stamp="20260101-120000")
    (tmp_path / "20260101-120000" / "report.json").write_text("earlier run")
    second = new_run_dir(str(tmp_path), stamp="20260101-120000")
    third = new_run_dir(str(tmp_path), stamp="20260101-120000")
    assert [os.path.basename(p) for p in (first, second, third)] == [
        "20260101-120000", "20260101-120000-2", "20260101-120000-3"]
    assert (tmp_path / "20260101-120000" / "report.json").read_text() == "earlier run"
    assert re.fullmatch(r"\d{8}-\d{6}", os.path.basename(new_run_dir(str(tmp_path))))


def test_bad_argument_is_one_line_and_makes_no_run_dir(tmp_path):
    r = _cli("--epochs", "0", "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 2
    assert r.stderr.strip() == "python -m examples.demo: error: --epochs 0 must be >= 1"
    assert not (tmp_path / "runs").exists()


def _digits_test_images(size):
    import tensorflow as tf

    from keras_coatnet.data_files import digits_arrays

    _, (x, y) = digits_arrays()
    return tf.image.resize(np.repeat(x, 3, axis=-1), (size, size), method="bilinear").numpy(), y


@pytest.mark.slow
def test_fast_demo_report_matches_its_artifacts(tmp_path):
    runs = tmp_path / "runs"
    r = _cli("--fast", "--runs-dir", str(runs), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = list(runs.iterdir())
    assert re.fullmatch(r"\d{8}-\d{6}", run_dir.name)
    assert "Demo finished" in r.stdout and str(run_dir) in r.stdout
    report = json.loads((run_dir / "report.json").read_text())
    s, a = report["summary"], report["artifacts"]
    assert report["fast"] is True and report["run_dir"] == str(run_dir)
    for key in ("keras", "fp32_tflite", "int8_tflite", "labels", "curves", "benchmark", "report", "model_card"):
        assert os.path.dirname(a[key]) == str(run_dir) and os.path.getsize(a[key]) > 0, key
    for key in ("curves", "benchmark"):
        assert open(a[key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert open(a["labels"]).read().split() == [str(i) for i in range(10)]

    # Numbers: the whole fixed test split, fp32 exact, int8 close, int8 much smaller.
    assert s["test_images"] == 360
    # Accuracy after the fixed fast recipe (4 epochs, seed 0): 10 balanced classes, so chance is 0.1, and a model
    # that learned nothing scores 0.1 +- 0.016 (binomial standard deviation on 360 images). The recipe reached
    # 0.947 and 0.975 in runs on 2 CPU cores (validation accuracy 0.94 after 3 of the 4 epochs); 0.85 leaves about
    # ten points for other CPUs' kernels and is 45 standard deviations above chance.
    assert s["keras_test_accuracy"] >= 0.85
    assert abs(s["fp32_test_accuracy"] - s["keras_test_accuracy"]) <= 1 / 360
    assert abs(s["int8_test_accuracy"] - s["keras_test_accuracy"]) <= 0.05
    assert report["formats"]["fp32"]["max_rel_error"] <= 1e-4 and s["fp32_validated"]
    assert report["formats"]["int8"]["confident_agreement"] == 1.0  # near-ties may flip; sure digits may not
    assert s["fp32_size_bytes"] == os.path.getsize(a["fp32_tflite"])
    assert s["int8_size_bytes"] == os.path.getsize(a["int8_tflite"])
    assert s["int8_size_bytes"] < 0.5 * s["fp32_size_bytes"]
    # Latency: a finite positive median per format and thread count (the fast demo times 1 and 2 threads), the
    # summary's numbers are the 2-thread ones, the ratios are those numbers' ratios, and the timed runs (5 per
    # format and thread count, after 1 warm-up) took less time than the whole demo.
    fp32_ms, int8_ms = report["formats"]["fp32"]["latency_ms"], report["formats"]["int8"]["latency_ms"]
    for latency in (fp32_ms, int8_ms):
        assert set(latency) == {"1", "2"} and all(math.isfinite(v) and v > 0 for v in latency.values()), latency
    assert s["latency_threads"] == 2
    assert s["fp32_latency_ms"] == fp32_ms["2"] and s["int8_latency_ms"] == int8_ms["2"]
    assert s["int8_latency_ratio"] == pytest.approx(s["int8_latency_ms"] / s["fp32_latency_ms"], abs=1e-3)
    for t in ("1", "2"):  # the report rounds latencies and ratios to 3 decimals: that much slack, no more
        r = int8_ms[t] / fp32_ms[t]
        slack = 5e-4 * (1 + 1.01 * r * (1 / int8_ms[t] + 1 / fp32_ms[t]))
        assert report["formats"]["int8"]["ratio_to_fp32"][t] == pytest.approx(r, abs=slack), t
    assert 6 * sum(fp32_ms.values()) / 1000 + 6 * sum(int8_ms.values()) / 1000 < report["wall_time_s"]
    assert report["checks"] == {"fp32_validated": True}
    assert report["model"]["params"] > 100_000 and report["model"]["input_size"] == [32, 32]
    assert [st["block"][:6] for st in report["model"]["stages"]] == ["MBConv", "MBConv", "Transf", "Transf"]

    # Recompute both accuracies from the files, independently of the export code.
    import keras
    from ai_edge_litert.interpreter import Interpreter

    import keras_coatnet  # noqa: F401 - registers the layers

    x, y = _digits_test_images(32)
    x = np.round(x).clip(0, 255)  # the images the demo's export validated on: rounded once, as camera bytes
    model = keras.models.load_model(a["keras"], compile=False)
    keras_acc = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
    assert keras_acc == pytest.approx(s["keras_test_accuracy"], abs=1 / 360)
    it = Interpreter(model_path=a["int8_tflite"])
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.int8
    hits = 0
    for image, label in zip(x.astype(np.uint8), y):
        it.set_tensor(inp["index"], image[None])
        it.invoke()
        hits += int(it.get_tensor(out["index"])[0].argmax() == label)
    assert hits / 360 == pytest.approx(s["int8_test_accuracy"], abs=1 / 360)

    card = (run_dir / "MODEL_CARD.md").read_text()
    for text in ("## Architecture", "## Training recipe", "## Data", "## Metrics per format",
                 f"{report['model']['params']:,} parameters", f"{s['keras_test_accuracy']:.2%}",
                 f"{s['int8_test_accuracy']:.2%}", "coatnet_micro_int8.tflite",
                 f"| {s['fp32_latency_ms']:.2f} ms |", f"| {s['int8_latency_ms']:.2f} ms |"):
        assert text in card, text
