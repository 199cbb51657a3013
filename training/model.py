"""Build the model for training: create_model, optional pretrained weights, frozen backbone."""
import logging

import keras

from keras_coatnet.naming import timm_path
from training._compat import sublayers

log = logging.getLogger("training")


def transfer_weights(src, dst):
    """Copy weights from src to dst for layers with the same name and
    weight shapes; returns count."""
    src_layers = {timm_path(layer.name): layer for layer in src.layers}
    copied = 0
    for layer in dst.layers:
        other = src_layers.get(timm_path(layer.name))
        if other is None or not layer.weights:
            continue
        values = other.get_weights()
        if [tuple(w.shape) for w in layer.weights] != [v.shape for v in values]:
            log.info("not transferred (shape differs): %s", layer.name)
            continue
        layer.set_weights(values)
        copied += 1
    return copied


def load_source(cfg):
    """The model holding the initial weights: a .keras checkpoint, or create_model(weights=...)."""
    import keras_coatnet

    weights = str(cfg["weights"])
    if weights.endswith(".keras"):
        return keras.models.load_model(weights, compile=False)
    size = int(cfg["image_size"])
    return keras_coatnet.create_model(cfg["model"], weights=weights, include_top=False,
                                      input_shape=(size, size, 3))


def freeze_backbone(model):
    """Make every layer except the classifier head ('head*', 'predictions') non-trainable."""
    for layer in model.layers:
        if not (layer.name.startswith("head") or layer.name == "predictions"):
            layer.trainable = False


def synchronize_batchnorm(model):
    """Make every BatchNormalization in model (nested ones too) compute its training statistics over
    the global batch: an all-reduce across the replicas of the current tf.distribute strategy
    (a no-op outside one). Returns the number of layers changed."""
    bns = [layer for layer in sublayers(model, recursive=True)
           if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.synchronized = True
    return len(bns)


def build_model(cfg, num_classes):
    """create_model(cfg['model']) for num_classes, softmax output, initialised from cfg['weights']."""
    import keras_coatnet

    size = int(cfg["image_size"])
    model = keras_coatnet.create_model(
        cfg["model"], input_shape=(size, size, 3), classes=int(num_classes),
        drop_path_rate=float(cfg["drop_path_rate"]), dropout_rate=float(cfg["dropout_rate"]))
    if cfg["weights"]:
        copied = transfer_weights(load_source(cfg), model)
        if not copied:
            raise ValueError(f"weights={cfg['weights']!r}: no layer of {cfg['model']} matched by name and shape")
        log.info("initialised %d layers from %s", copied, cfg["weights"])
    if cfg["freeze_backbone"]:
        freeze_backbone(model)
    if cfg["sync_batchnorm"]:
        log.info("synchronized BatchNorm in %d layers", synchronize_batchnorm(model))
    return model
