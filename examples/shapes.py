"""A small synthetic image folder (root/CLASS/*.png) to try the folder examples without data of your own."""

import os

import numpy as np

# class name -> (shape, base RGB color)
CLASSES = {"circle": ("circle", (220, 60, 50)), "square": ("square", (50, 180, 70)),
           "triangle": ("triangle", (60, 90, 220))}


def draw(shape, color, size=64, rng=None):
    """One RGB PIL image: a jittered ``shape`` in a jittered ``color`` on a noisy gray background."""
    from PIL import Image, ImageDraw

    rng = rng or np.random.default_rng()
    background = rng.normal(128, 20, (size, size, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    r = size * rng.uniform(0.22, 0.35)
    cx, cy = size * rng.uniform(0.38, 0.62, 2)
    fill = tuple(int(c) for c in np.clip(np.asarray(color) + rng.integers(-30, 31, 3), 0, 255))
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        pen.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; allowed: circle, square, triangle")
    return image


def write_shapes_folder(root, per_class=12, size=64, classes=None, seed=0):
    """Writes ``root/<class>/<class>_<i>.png`` for each class; returns the sorted class names.

    classes: names from CLASSES (default all three). Existing files of the same name are overwritten."""
    names = sorted(classes or CLASSES)
    unknown = [n for n in names if n not in CLASSES]
    if unknown:
        raise ValueError(f"unknown shape class(es) {unknown}; allowed: {sorted(CLASSES)}")
    if per_class < 1:
        raise ValueError(f"per_class={per_class} must be >= 1")
    from keras_coatnet.atomic import atomic_path

    rng = np.random.default_rng(seed)
    for name in names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        shape, color = CLASSES[name]
        for i in range(per_class):
            with atomic_path(os.path.join(root, name, f"{name}_{i:03d}.png")) as tmp:
                draw(shape, color, size, rng).save(tmp)
    return names
