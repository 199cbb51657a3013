"""MODEL_CARD.md for a demo run: architecture, training recipe, data, metrics per format, intended use."""

RECIPE_KEYS = ("epochs", "batch_size", "lr", "lr_base_batch", "warmup_epochs", "min_lr_ratio", "weight_decay",
               "clipnorm", "label_smoothing", "drop_path_rate", "rrc_scale", "rrc_ratio", "hflip",
               "randaugment_ops", "mixup_alpha", "cutmix_alpha", "image_size", "seed")


def describe_model(keras_path, model_name):
    """{name, params, input_size, config, stages: [{stage, block, depth, width, output}]} of a saved model."""
    import keras

    import keras_coatnet
    from keras_coatnet.variants import get_entry

    model = keras.models.load_model(keras_path, compile=False)
    config = dict(get_entry(model_name)["config"])
    outputs = keras_coatnet.stage_outputs(model)
    kinds = {"C": "MBConv", "T": "Transformer (relative attention)"}
    stages = [{"stage": i, "block": kinds.get(str(config["block_type"][i]), str(config["block_type"][i])),
               "depth": int(config["depths"][i]), "width": int(out.shape[-1]),
               "output": [int(d) for d in out.shape[1:]]} for i, out in enumerate(outputs)]
    return {"name": model_name, "params": int(model.count_params()), "input_size": list(model.inputs[0].shape[1:3]),
            "classes": int(model.outputs[0].shape[-1]), "input": "RGB 0-255, normalized inside the model",
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}, "stages": stages}


def _pct(x):
    return "-" if x is None else f"{x:.2%}"


def _format_rows(report):
    s = report["summary"]
    t = s["latency_threads"]
    rows = [f"| Keras `.keras` | {_pct(s['keras_test_accuracy'])} | {s['keras_size_bytes'] / 1e6:.2f} MB | - "
            f"| reference | - |"]
    for name, label in (("fp32", "TFLite fp32"), ("int8", "TFLite int8, uint8 input")):
        e = report["formats"][name]
        rows.append(f"| {label} `{e['path'].rsplit('/', 1)[-1]}` | {_pct(e['accuracy'])} | "
                    f"{e['size_bytes'] / 1e6:.2f} MB | {e['latency_ms'][str(t)]:.2f} ms | "
                    f"{e['top1_agreement']:.2%} top-1 agreement, max rel. error {e['max_rel_error']:.2g} | "
                    f"{'passed' if e['passed'] else 'FAILED'} |")
    return rows


def render(report):
    """The model card as Markdown text."""
    m, d, tr, s = report["model"], report["data"], report["training"], report["summary"]
    recipe = tr["recipe"]
    h, w = m["input_size"]
    lines = [
        f"# Model card: {m['name']} on digits ({report['run_dir']})",
        "",
        "A small CoAtNet (convolution + relative-attention Transformer stages) trained from scratch by "
        "`make demo`" + (" in its `--fast` smoke mode: an undertrained model, numbers are not representative."
                         if report["fast"] else "."),
        "",
        "## Architecture",
        "",
        f"`keras_coatnet.create_model(\"{m['name']}\", input_shape=({h}, {w}, 3), classes={m['classes']})`: "
        f"{m['params']:,} parameters. Input: {m['input']} (NHWC). Output: softmax over {m['classes']} classes.",
        "",
        f"Stem: two 3x3 convolutions, width {m['config']['stem_width']}, stride 2.",
        "",
        "| stage | block | depth | width | output (H, W, C) |",
        "|---|---|---|---|---|",
        *[f"| {st['stage']} | {st['block']} | {st['depth']} | {st['width']} | {tuple(st['output'])} |"
          for st in m["stages"]],
        "",
        f"Head: global average pooling, pre-logits width {m['config'].get('head_hidden_size')}, linear classifier.",
        "",
        "## Training recipe",
        "",
        f"`training.train.run({{\"preset\": \"digits\", ...}})`: AdamW, linear warmup then cosine decay, "
        f"{tr['optimizer_steps']} optimizer steps, {tr['fit_time_s']:.0f} s of fitting on {recipe.get('strategy')} "
        f"strategy. Best epoch (by {tr['best']['monitor']}): {tr['best']['epoch']}.",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {recipe[k]} |" for k in RECIPE_KEYS if k in recipe],
        "",
        "## Data",
        "",
        f"{d['source']} to {h}x{w}, gray copied to RGB. {d['train_images']} training images "
        f"(after holding out val_fraction={recipe.get('val_fraction')} of the training split for validation), {d['test_images']} test images: {d['test_split']}. "
        "The test images are used only for the numbers below.",
        "",
        "## Metrics per format",
        "",
        f"Accuracy on the {s['test_images']} test images; latency: LiteRT, batch 1, median of the timed runs, "
        f"{s['latency_threads']} threads, on the machine that ran the demo. Validation compares each TFLite "
        "file with the Keras model on the same images.",
        "",
        "| model | test accuracy | size | latency | agreement with Keras | validation |",
        "|---|---|---|---|---|---|",
        *_format_rows(report),
        "",
        f"int8 - Keras: {s['int8_minus_keras_points']:+.2f} accuracy points; int8 file {1 / s['int8_size_ratio']:.1f}x "
        f"smaller than fp32; int8 latency x{s['int8_latency_ratio']:.2f} of fp32.",
        "",
        "## Intended use and limits",
        "",
        "A teaching and smoke-test model: it shows the train -> export -> validate -> deploy path of keras_coatnet. "
        "It recognizes centered handwritten digits like sklearn's 8x8 scans; it is not meant for photos, other "
        "scripts or any decision that matters.",
        "",
        "The int8 file takes raw RGB bytes (uint8, [1, H, W, 3]) and returns int8 scores; `labels.txt` line i is "
        "class i. Run it with `python -m examples.tflite_predict MODEL_int8.tflite IMAGE.png`.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(report, path):
    from keras_coatnet.atomic import write_text

    write_text(path, render(report))
    return path
