"""The timm half of the round-trip tests, run with the timm environment's Python (torch, timm; see Makefile).

    timm_side.py load FOLDER IMAGES.npy OUT.npy     timm.create_model('local-dir:FOLDER', pretrained=True) on raw
                                                    0-255 NHWC images, normalized by its pretrained_cfg -> logits
    timm_side.py save ARCH FOLDER IMAGES.npy OUT.npy  a seeded random ARCH (BatchNorm statistics and tables
                                                    perturbed) saved with timm's save_for_hf, and its logits
    timm_side.py transform CFG.json IMAGES_DIR OUT.npz  timm's eval transform (resolve_data_config +
                                                    create_transform) of each image -> [C, H, W] float32
"""

import json
import os
import sys

import numpy as np
import timm
import torch


def _logits(model, images):
    cfg = model.pretrained_cfg
    x = (images / 255.0 - np.array(cfg["mean"])) / np.array(cfg["std"])
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).numpy()


def main(argv):
    if argv[0] == "load":
        folder, images, out = argv[1:]
        model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        np.save(out, _logits(model, np.load(images).astype(np.float64)))
    elif argv[0] == "save":
        arch, folder, images, out = argv[1:]
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False).eval()
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name.endswith("running_mean"):
                    buf.normal_(0, 0.1)
                elif name.endswith("running_var"):
                    buf.uniform_(0.5, 1.5)
            for name, p in model.named_parameters():
                if "relative_position_bias_table" in name or name.endswith("norm.bias"):
                    p.normal_(0, 0.1)
        timm.models.save_for_hf(model, folder, safe_serialization=True)
        np.save(out, _logits(model, np.load(images).astype(np.float64)))
    elif argv[0] == "transform":
        from PIL import Image
        from timm.data import create_transform, resolve_data_config

        with open(argv[1]) as f:
            cfg = json.load(f)
        transform = create_transform(**resolve_data_config(pretrained_cfg=cfg))
        names = sorted(os.listdir(argv[2]))
        arrays = {}
        for n in names:
            with Image.open(os.path.join(argv[2], n)) as im:
                arrays[n] = transform(im.convert("RGB")).numpy()
        np.savez(argv[3], **arrays)
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
