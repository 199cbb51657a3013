"""sklearn's 8x8 digits as small RGB images: the project's quick calibration / accuracy set.

Used only when the training package has no digits loader (see ``calibration.digits_split``).
"""

import numpy as np

TEST_FRACTION = 0.2
SEED = 0


def load_digits_rgb(size, split="test"):
    """(images [N, size, size, 3] float32 in 0-255, labels [N] int) for split "train", "test" or "all"."""
    from sklearn.datasets import load_digits
    import tensorflow as tf

    data = load_digits()
    x = data.images.astype("float32") * (255.0 / 16.0)  # [N, 8, 8], 0-16 -> 0-255
    y = data.target.astype("int64")
    order = np.random.RandomState(SEED).permutation(len(x))
    n_test = int(round(len(x) * TEST_FRACTION))
    pick = {"test": order[:n_test], "train": order[n_test:], "all": order}
    if split not in pick:
        raise ValueError(f"unknown digits split {split!r}; allowed: {sorted(pick)}")
    idx = pick[split]
    img = tf.image.resize(x[idx, :, :, None], (size, size), method="bilinear").numpy()
    img = np.clip(np.repeat(img, 3, axis=-1), 0.0, 255.0)
    return img.astype("float32"), y[idx]
