"""Training inputs a new user gets wrong: hidden folders, unreadable classes, tiny LRs, finished runs,
bad flags. Each gives the right data, a warning, or one error line (exit 2), never a traceback."""
import json
import logging
import os

import pytest

from tests.training_utils import image_bytes, tiny_config, write_image_folder
from training import config as config_lib
from training.data import list_image_folder, load_folder_data
from training.train import main, run


def test_hidden_and_system_folders_are_not_classes(tmp_path):
    root = write_image_folder(str(tmp_path / "data"))
    for hidden in (".ipynb_checkpoints", "__MACOSX", os.path.join("class_0", ".thumbs")):
        os.makedirs(tmp_path / "data" / hidden)
        (tmp_path / "data" / hidden / "img.jpg").write_bytes(image_bytes("JPEG", seed=1))
    (tmp_path / "data" / "class_0" / "._img_0.jpg").write_bytes(b"\0\5\26\7")  # macOS resource fork
    paths, labels, classes = list_image_folder(root)
    assert classes == ["class_0", "class_1"]
    assert len(paths) == 10 and not any("/." in p or "__MACOSX" in p for p in paths)


def test_class_without_a_readable_image_is_an_error_naming_it(tmp_path):
    root = write_image_folder(str(tmp_path / "data"), per_class=(4, 4, 0),
                              corrupt=[(2, "broken.jpg", image_bytes("JPEG", seed=7)[:200])])
    cfg = config_lib.resolve({"dataset": "folder", "train_data": root, "image_size": 32})
    with pytest.raises(ValueError, match="class_2"):
        load_folder_data(cfg)


def test_tiny_peak_lr_is_warned_and_batch_and_lr_printed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="training")
    run(tiny_config(tmp_path, batch_size=8, lr=1e-3, lr_base_batch=4096, epochs=1, steps_per_epoch=1))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "global batch 8" in text and "peak LR 1.95e-06" in text, text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "1e-05" in r.getMessage()]
    assert len(warnings) == 1 and "--lr-base-batch" in warnings[0] and "\n" not in warnings[0], text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    return run(tiny_config(out, epochs=1, steps_per_epoch=2))


def test_finished_run_is_not_overwritten_and_eval_only_writes_eval_json(finished_run):
    out = os.path.dirname(finished_run["metrics_json"])
    before = {p: open(os.path.join(out, p), "rb").read() for p in ("best.keras", "metrics.json", "history.csv")}
    with pytest.raises(ValueError, match="finished run.*--overwrite"):
        run(tiny_config(out, epochs=1, steps_per_epoch=2))
    r = run(tiny_config(out, eval_only=True, weights=finished_run["best_model"]))
    assert r["metrics_json"] == os.path.join(out, "eval.json")
    with open(os.path.join(out, "eval.json")) as f:
        assert json.load(f)["status"] == "evaluated"
    assert before == {p: open(os.path.join(out, p), "rb").read() for p in before}
    again = run(tiny_config(out, epochs=1, steps_per_epoch=2, overwrite=True))
    assert again["status"] == "completed"


def test_labels_txt_beside_the_checkpoints_in_class_index_order(tmp_path):
    root = write_image_folder(str(tmp_path / "data"), per_class=(6, 6, 6))
    os.rename(os.path.join(root, "class_0"), os.path.join(root, "zebra"))
    os.rename(os.path.join(root, "class_2"), os.path.join(root, "ant"))
    r = run(tiny_config(tmp_path / "run", dataset="folder", train_data=root, batch_size=4, epochs=1,
                        steps_per_epoch=1))
    with open(os.path.join(os.path.dirname(r["best_model"]), "labels.txt")) as f:
        assert f.read().splitlines() == ["ant", "class_1", "zebra"]


def test_flag_values_are_parsed_by_the_option_type():
    cfg, _ = config_lib.parse_cli(["--val-fraction", "1e-1", "--clipnorm", "1e0", "--output-dir", "2024-01-01",
                                   "--layer-decay", "none", "--rrc-scale", "[0.5, 1]", "--mixed-precision", "true"])
    assert cfg["val_fraction"] == 0.1 and cfg["clipnorm"] == 1.0 and cfg["output_dir"] == "2024-01-01"
    assert cfg["layer_decay"] is None and cfg["rrc_scale"] == [0.5, 1.0]


def _one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err and err[-1].startswith("train: error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


def test_bad_inputs_are_one_line_errors_with_exit_2(tmp_path, capsys, monkeypatch):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs: [3\nlr: 1\n")
    assert "bad.yaml" in _one_line_error(capsys, ["--config", str(bad_yaml)])
    assert "--image-size" in _one_line_error(capsys, ["--image-size", "abc"])
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "a_file" in _one_line_error(capsys, ["--preset", "digits", "--output-dir", str(a_file)])
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # and an empty Hub cache (conftest)
    line = _one_line_error(capsys, ["--preset", "digits", "--model", "coatnet_0_rw_224", "--weights", "imagenet",
                                    "--output-dir", str(tmp_path / "w"), "--epochs", "1", "--steps-per-epoch", "1"])
    assert "hf://timm/coatnet_0_rw_224.sw_in1k: config.json is not in the Hub cache" in line
    assert line.endswith("(HF_HUB_OFFLINE is set)")


def test_resume_with_changed_config_says_what_differs_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    os.makedirs(out / "backup")
    (out / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": 1}))
    (out / "config.json").write_text(json.dumps(config_lib.resolve(tiny_config(out, epochs=3))))
    line = _one_line_error(capsys, ["--preset", "digits", "--output-dir", str(out), "--epochs", "5",
                                    "--batch-size", "16", "--steps-per-epoch", "4", "--verbose", "0"])
    assert "epochs 3 -> 5" in line and "--overwrite" in line and "backup" in line, line
