"""Classify an image with an int8 .tflite the way a phone app does: uint8 RGB in, top-5 labels out.

    python -m examples.tflite_predict runs/<demo>/coatnet_micro_int8.tflite digit.png

Needs only ai-edge-litert, numpy and pillow (no TensorFlow). The image is converted to RGB and resized
to the model's input size; a uint8 input takes the bytes as they are, an int8 / float input gets them
quantized / as floats. Scores are dequantized with the output's scale and zero point; labels.txt (line i =
class i) is read from --labels or from next to the model.
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
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path} not found")
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((width, height), Image.BILINEAR)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    return np.asarray(rgb, np.uint8)[None]


def to_input(pixels, detail):
    """uint8 pixels -> the input tensor's dtype (uint8 as is; int8 quantized; float as 0-255 floats)."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.uint8:
        return pixels
    if dtype == np.int8:
        scale, zero = detail["quantization"]
        if not scale:
            raise ValueError("the model's int8 input has no quantization parameters; cannot map pixels to it")
        return np.clip(np.round(pixels.astype(np.float32) / scale + zero), -128, 127).astype(np.int8)
    return pixels.astype(dtype)


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

    try:
        it = Interpreter(model_path=model_path, num_threads=threads)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"cannot load {model_path} as a TFLite model: {str(e).strip().splitlines()[0]}") from None
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    _, height, width, channels = inp["shape"]
    if channels != 3:
        raise ValueError(f"{model_path} takes {channels}-channel input; this example feeds RGB images")
    labels = read_labels(labels_path or os.path.join(os.path.dirname(os.path.abspath(model_path)), "labels.txt"),
                         int(out["shape"][-1]))
    it.set_tensor(inp["index"], to_input(load_image(image_path, height, width), inp))
    it.invoke()
    scores = dequantize(it.get_tensor(out["index"]), out)[0]
    best = np.argsort(-scores, kind="stable")[:top]
    return {"top": [(labels[i], float(scores[i])) for i in best], "input_dtype": np.dtype(inp["dtype"]).name,
            "output_dtype": np.dtype(out["dtype"]).name, "input_size": [int(height), int(width)]}


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
