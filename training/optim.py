"""AdamW with decoupled weight decay masks, optional layer-wise LR decay, warmup + cosine LR."""
import math

import keras

from keras_coatnet.naming import block_index
from training._compat import variable_index

NO_DECAY_PATTERNS = ("relative_position_bias_table", "rel_pos")


def scaled_lr(lr, global_batch, base_batch, scaling="linear"):
    """Peak LR for global_batch, given lr at base_batch (linear, sqrt or no scaling)."""
    ratio = global_batch / float(base_batch)
    return lr * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[scaling]


def lr_schedule(peak_lr, total_steps, warmup_steps, min_lr_ratio):
    """Linear warmup from 0 to peak_lr over warmup_steps, then cosine decay to peak_lr*min_lr_ratio."""
    warmup_steps = min(int(warmup_steps), max(int(total_steps) - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak_lr,
        decay_steps=max(int(total_steps) - warmup_steps, 1),
        alpha=min_lr_ratio,
        warmup_target=peak_lr if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def no_weight_decay(variable):
    """True for variables AdamW must not decay: 1-D (biases, norms, layer scale) and rel-pos tables."""
    return len(variable.shape) <= 1 or any(p in variable.path for p in NO_DECAY_PATTERNS)


def layer_depths(model):
    """{variable path: depth}: stem 0, each stages__i__blocks__j block +1 in order, the rest (head) last."""
    depth, depths, rest = 0, {}, []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name.startswith("stem"):
            d = 0
        elif block_index(layer.name) is not None:
            depth += 1
            d = depth
        else:
            rest.append(layer)
            continue
        depths.update({v.path: d for v in layer.weights})
    depths.update({v.path: depth + 1 for layer in rest for v in layer.weights})
    return depths


def layer_lr_multipliers(model, decay):
    """{variable path: decay ** (max_depth - depth)} for layer-wise LR decay (head gets 1.0)."""
    depths = layer_depths(model)
    top = max(depths.values(), default=0)
    return {path: decay ** (top - d) for path, d in depths.items()}


@keras.saving.register_keras_serializable(package="keras_coatnet_training")
class LayerDecayAdamW(keras.optimizers.AdamW):
    """AdamW whose learning rate is multiplied per variable (layer-wise LR decay).

    lr_multipliers: {variable path: multiplier}; variables not listed use 1.0.
    Checkpoints compiled with it load with `compile=False`, or after `import training.optim`.
    """

    def __init__(self, *args, lr_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        self._multipliers = []

    def build(self, var_list):
        super().build(var_list)
        self._multipliers = [float(self.lr_multipliers.get(v.path, 1.0)) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        mult = self._multipliers[variable_index(self, variable)] if self._multipliers else 1.0
        super().update_step(gradient, variable, learning_rate * mult if mult != 1.0 else learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": self.lr_multipliers}


def make_optimizer(model, cfg, schedule):
    """AdamW over model's trainable variables, with norms/biases/rel-pos tables excluded from decay."""
    kwargs = {}
    if cfg["layer_decay"]:
        kwargs["lr_multipliers"] = layer_lr_multipliers(model, float(cfg["layer_decay"]))
    # Plain AdamW when there is no layer decay, so checkpoints load without this module.
    opt = (LayerDecayAdamW if kwargs else keras.optimizers.AdamW)(
        learning_rate=schedule,
        weight_decay=float(cfg["weight_decay"]),
        beta_1=float(cfg["beta_1"]),
        beta_2=float(cfg["beta_2"]),
        epsilon=1e-8,
        global_clipnorm=cfg["clipnorm"],
        use_ema=bool(cfg["use_ema"]),
        ema_momentum=float(cfg["ema_momentum"]),
        **kwargs,
    )
    opt.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if no_weight_decay(v)])
    return opt
