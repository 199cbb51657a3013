"""Keras layer names <-> timm module paths, one reversible mapping.

Keras' PyTorch backend keeps variables in a `torch.nn.ParameterDict` keyed by their path, which refuses '.',
so a timm module path is spelled with "__" in place of each dot: "stages.2.blocks.0" is the layer
"stages__2__blocks__0", "head.fc" is "head__fc", a block's "mlp.fc1" is "mlp__fc1". timm's module names never
contain "__", so the mapping runs both ways.
"""

SEP = "__"


def keras_name(timm_path):
    """'stages.2.blocks.0' -> 'stages__2__blocks__0'."""
    return timm_path.replace(".", SEP)


def timm_path(name):
    """'stages__2__blocks__0' -> 'stages.2.blocks.0'."""
    return name.replace(SEP, ".")


def block_index(name):
    """(stage, block) for a block layer's name ('stages__2__blocks__0' -> (2, 0)), else None."""
    parts = timm_path(name).split(".")
    if len(parts) == 4 and parts[0] == "stages" and parts[2] == "blocks" and parts[1].isdigit() and parts[3].isdigit():
        return int(parts[1]), int(parts[3])
    return None
