"""Classify an image with an int8 .tflite the way a phone app does: uint8 RGB in, top-5 labels out.

    python -m examples.tflite_predict runs/<demo>/coatnet_micro_int8.tflite digit.png

Needs only ai-edge-litert, numpy and pillow (no TensorFlow). The image is decoded to RGB (16-bit PNGs
scaled to 8 bits, by ``export.artifacts.decode_image``) and resized to the model's input size. What the input
expects is read from the file's export metadata (``export.artifacts``): raw 0-255 values, or
(x / 255 - mean) / std for a float file of a model without its own normalization; an integer input with a
scale gets those values quantized, one without (``--uint8-input``) the bytes as they are. Scores are
dequantized with the output's scale and zero point. Labels come from --labels, else the file's metadata,
else labels.txt next to the model (line i = class i). A file without export metadata is fed raw 0-255 values.
A model whose size or sha256 differs from the export's report.json beside it is refused as truncated or corrupt.
"""

import argparse
import json
import os
import sys

import numpy as np

from examples.cli import run_main

PROG = "python -m examples.tflite_predict"


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=".tflite file (e.g. the demo's coatnet_micro_int8.tflite)")
    p.add_argument("image", help="image file (PNG, JPEG, ...)")
    p.add_argument("--labels", default=None, help="labels file, one class per line (default: labels.txt next to "
                                                  "the model)")
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    p.add_argument("--threads", type=int, default=2, help="LiteRT CPU threads (default 2)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return p


def read_labels(path, num_classes):
    """Class names from a labels.txt (line i = class i); must list exactly num_classes names."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"labels file {path} not found (pass --labels FILE)")
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != num_classes:
        raise ValueError(f"{path} has {len(names)} labels but the model outputs {num_classes} classes")
    return names


def load_image(path, height, width):
    """(1, height, width, 3) uint8 RGB, resized bilinearly as a camera pipeline would."""
    from PIL import Image

    from export.artifacts import decode_image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path} not found")
    rgb = Image.fromarray(decode_image(path)).resize((width, height), Image.BILINEAR)
    return np.asarray(rgb, np.uint8)[None]


def input_values(pixels, info):
    """uint8 pixels -> the float values the input expects (``info``: the metadata "input" entry, or None)."""
    x = pixels.astype(np.float32)
    if info and info.get("values") == "normalized":
        x = (x / 255.0 - np.asarray(info["mean"], np.float32)) / np.asarray(info["std"], np.float32)
    return x


def to_input(values, detail):
    """Float input values -> the input tensor's dtype: quantized for an integer input with a scale, cast for
    one without (raw uint8 bytes), as they are for a float input."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu":
        scale, zero = detail["quantization"]
        if scale:
            values = np.round(values / scale + zero)
        info = np.iinfo(dtype)
        return np.clip(np.round(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def dequantize(scores, detail):
    """Output tensor -> float32 scores (scale * (q - zero_point) for integer outputs)."""
    scale, zero = detail["quantization"]
    if scores.dtype.kind in "iu" and scale:
        return (scores.astype(np.float32) - zero) * scale
    return scores.astype(np.float32)


def predict(model_path, image_path, labels_path=None, top=5, threads=2):
    """[(label, score)] best first, plus the input / output dtypes, for one image."""
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model {model_path} not found")
    from ai_edge_litert.interpreter import Interpreter

    from export.artifacts import check_manifest
    from export.artifacts import read as read_metadata

    check_manifest(model_path)
    try:
        it = Interpreter(model_path=model_path, num_threads=threads)
        it.allocate_tensors()
        with open(model_path, "rb") as f:
            meta = read_metadata(f.read()) or {}
    except Exception:  # noqa: BLE001 - LiteRT / flatbuffers raise several types for a damaged file
        raise ValueError(f"{model_path} is truncated or corrupt (or not a .tflite file): LiteRT cannot load it as "
                         "a TFLite model") from None
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    _, height, width, channels = inp["shape"]
    if channels != 3:
        raise ValueError(f"{model_path} takes {channels}-channel input; this example feeds RGB images")
    num_classes = int(out["shape"][-1])
    if labels_path is None and len(meta.get("labels") or []) == num_classes:
        labels = meta["labels"]
    else:
        labels = read_labels(labels_path or os.path.join(os.path.dirname(os.path.abspath(model_path)), "labels.txt"),
                             num_classes)
    values = input_values(load_image(image_path, height, width), meta.get("input"))
    it.set_tensor(inp["index"], to_input(values, inp))
    it.invoke()
    scores = dequantize(it.get_tensor(out["index"]), out)[0]
    best = np.argsort(-scores, kind="stable")[:top]
    return {"top": [(labels[i], float(scores[i])) for i in best], "input_dtype": np.dtype(inp["dtype"]).name,
            "output_dtype": np.dtype(out["dtype"]).name, "input_size": [int(height), int(width)],
            "input_values": (meta.get("input") or {}).get("values", "raw_0_255 (no export metadata)")}


def main(argv=None):
    def body(args):
        if args.top < 1:
            raise ValueError(f"--top {args.top} must be >= 1")
        result = predict(args.model, args.image, args.labels, args.top, args.threads)
        if args.json:
            print(json.dumps(result))
            return 0
        h, w = result["input_size"]
        print(f"{args.image} -> {h}x{w} {result['input_dtype']} input, {result['output_dtype']} output")
        for rank, (label, score) in enumerate(result["top"], 1):
            print(f"  {rank}. {label:<20} {score:.3f}")
        return 0

    return run_main(PROG, build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
