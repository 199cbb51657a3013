"""The one image decoder of export calibration and the examples: any file / bytes -> HxWx3 uint8 RGB.

16-bit images (PNG ``I;16`` / ``I``) are scaled to 8 bits (65535 -> 255), not clipped; palette, grayscale,
alpha and CMYK images become RGB. Needs only Pillow and NumPy.
"""

import io

import numpy as np

SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def decode_image(source):
    """A path or encoded bytes -> [H, W, 3] uint8 RGB. Raises ValueError for data Pillow cannot read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
            im.seek(0)
            if im.mode in SIXTEEN_BIT_MODES:
                gray = np.asarray(im, np.float64)
                gray = np.round(np.clip(gray, 0, 65535) / 257.0).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            if im.mode == "F":
                gray = np.clip(np.round(np.asarray(im, np.float64)), 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            return np.asarray(im.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        name = "image bytes" if isinstance(source, (bytes, bytearray)) else str(source)
        raise ValueError(f"cannot read {name}: {e}") from None
