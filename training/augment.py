"""Input-pipeline augmentation: Keras layers where they exist, small ones where not.

All layers take NHWC float images in [0, 255]. Every random draw has its own stream: one seed per layer
(and per RandAugment op), derived from the run's seed by `stream_seed`, so draws are independent and
reproducible with --deterministic --seed.
"""
import hashlib

import keras
import tensorflow as tf


def stream_seed(seed, stream):
    """An integer seed in [0, 2**31) for the named random stream of run seed `seed` (None stays None)."""
    if seed is None:
        return None
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{stream}".encode()).digest()[:4], "little") >> 1


def reseed(layer, seed):
    """Give a Keras preprocessing layer, and each random sub-layer it holds (RandAugment's ops), its own
    stream derived from `seed`; Keras passes one seed to all of them. Returns the layers reseeded."""
    done = []
    for name, sub in [("", layer)] + sorted((k, v) for k, v in vars(layer).items()
                                            if isinstance(v, keras.layers.Layer) and hasattr(v, "generator")):
        sub.seed = stream_seed(seed, f"{layer.name}.{name}")
        sub.generator = keras.random.SeedGenerator(sub.seed)
        done.append(sub)
    return done


class RandomResizedCrop(keras.layers.Layer):
    """Crop a random area/aspect-ratio box and resize it to (height, width).

    Input (H, W, C) or (B, H, W, C); output (height, width, C) or (B, height, width, C).
    scale: range of the box area as a fraction of the image; ratio: range of width/height.
    Falls back to the whole image when no box fits within 10 tries. The resize is the same
    (bilinear, antialiased, half-pixel centers) as eval_resize, so train and eval images match.
    """

    def __init__(self, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = int(height), int(width)
        self.scale, self.ratio, self.seed = tuple(scale), tuple(ratio), seed

    def crop_one(self, image):
        """(H, W, C) -> (height, width, C)."""
        shape = tf.shape(image)
        h_img, w_img = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        tries = 10
        # One op for all draws: in graph mode (tf.data) ops given the same op seed repeat one stream.
        u = tf.random.uniform([2 * tries + 2], seed=self.seed)
        area = (self.scale[0] + (self.scale[1] - self.scale[0]) * u[:tries]) * h_img * w_img
        log_r = tf.math.log(tf.constant(self.ratio, tf.float32))
        r = tf.exp(log_r[0] + (log_r[1] - log_r[0]) * u[tries:2 * tries])
        w = tf.round(tf.sqrt(area * r))
        h = tf.round(tf.sqrt(area / r))
        ok = (w >= 1) & (h >= 1) & (w <= w_img) & (h <= h_img)
        first = tf.argmax(tf.cast(ok, tf.int32))
        found = tf.reduce_any(ok)
        h = tf.cast(tf.where(found, h[first], h_img), tf.int32)
        w = tf.cast(tf.where(found, w[first], w_img), tf.int32)
        y = tf.minimum(tf.cast(u[-2] * tf.cast(shape[0] - h + 1, tf.float32), tf.int32), shape[0] - h)
        x = tf.minimum(tf.cast(u[-1] * tf.cast(shape[1] - w + 1, tf.float32), tf.int32), shape[1] - w)
        crop = image[y:y + h, x:x + w]
        return tf.image.resize(crop, [self.height, self.width], method="bilinear", antialias=True)

    def call(self, images, training=True):
        images = tf.cast(images, tf.float32)
        if not training:
            return tf.image.resize(images, [self.height, self.width], method="bilinear", antialias=True)
        if images.shape.rank == 3:
            return self.crop_one(images)
        out_shape = tf.TensorSpec([self.height, self.width, images.shape[-1]], tf.float32)
        return tf.map_fn(self.crop_one, images, fn_output_signature=out_shape)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "scale": self.scale, "ratio": self.ratio, "seed": self.seed}


class MixUpOrCutMix(keras.layers.Layer):
    """Per batch, apply CutMix with probability switch_prob, else MixUp (timm's scheme).

    Takes and returns {"images": (B, H, W, C), "labels": (B, classes) one-hot float}.
    """

    def __init__(self, mixup_alpha=0.8, cutmix_alpha=0.0, switch_prob=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.mixup = keras.layers.MixUp(alpha=mixup_alpha, seed=stream_seed(seed, "mixup")) if mixup_alpha > 0 else None
        self.cutmix = keras.layers.CutMix(factor=cutmix_alpha, seed=stream_seed(seed, "cutmix")) if cutmix_alpha > 0 else None
        self.switch_prob = switch_prob if (self.mixup and self.cutmix) else float(self.cutmix is not None)
        self.seed = seed
        self.switch_seed = stream_seed(seed, "mix_switch")

    def call(self, data, training=True):
        if self.mixup is None:
            return self.cutmix(data, training=training)
        if self.cutmix is None:
            return self.mixup(data, training=training)
        use_cutmix = tf.random.uniform([], seed=self.switch_seed) < self.switch_prob
        return tf.cond(use_cutmix, lambda: self.cutmix(data, training=training),
                       lambda: self.mixup(data, training=training))


def eval_resize(image, size, crop_pct):
    """Resize the shorter side to size/crop_pct, then center-crop (size, size). (H, W, C) float."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / crop_pct) / tf.reduce_min(shape)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
    image = tf.image.resize(image, new, method="bilinear", antialias=True)
    return tf.image.resize_with_crop_or_pad(image, size, size)


def batch_augmenter(cfg, num_classes):
    """Return fn(images (B,H,W,3) float 0-255, labels (B,) int) -> (images, one-hot labels)."""
    seed = cfg["seed"]
    image_layers = []
    if cfg["hflip"]:
        image_layers.append(keras.layers.RandomFlip("horizontal"))
    if cfg["randaugment_ops"]:
        image_layers.append(keras.layers.RandAugment(
            value_range=(0, 255), num_ops=int(cfg["randaugment_ops"]), factor=float(cfg["randaugment_factor"])))
    if cfg["random_erasing"]:
        image_layers.append(keras.layers.RandomErasing(factor=float(cfg["random_erasing"]), value_range=(0, 255)))
    seeded = [sub for layer in image_layers for sub in reseed(layer, seed)]
    mix = None
    if cfg["mixup_alpha"] or cfg["cutmix_alpha"]:
        mix = MixUpOrCutMix(float(cfg["mixup_alpha"]), float(cfg["cutmix_alpha"]),
                            float(cfg["mix_switch_prob"]), seed=seed)

    def augment(images, labels):
        for layer in image_layers:
            images = layer(images, training=True)
        onehot = tf.one_hot(labels, num_classes)
        if mix is not None:
            out = mix({"images": images, "labels": onehot}, training=True)
            images, onehot = out["images"], out["labels"]
        return tf.clip_by_value(images, 0.0, 255.0), onehot

    augment.layers = seeded + ([lay for lay in (mix.mixup, mix.cutmix) if lay] if mix else [])  # for tests
    return augment
