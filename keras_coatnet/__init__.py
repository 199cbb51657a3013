"""CoAtNet (Dai, Liu, Le, Tan, 2021) for Keras 3: timm-exact layers, the paper's CoAtNet-0..7 and timm's variants.

    import keras_coatnet
    model = keras_coatnet.CoAtNet0(weights=None, classes=10, input_shape=(224, 224, 3))
"""

from keras_coatnet import _compat, layers
from keras_coatnet.applications import (
    CoAtNet0,
    CoAtNet1,
    CoAtNet2,
    CoAtNet3,
    CoAtNet4,
    CoAtNet5,
    CoAtNet6,
    CoAtNet7,
    create_model,
    from_pretrained,
    from_timm_config,
    load_weights,
)
from keras_coatnet.builder import build_model, feature_model, stage_outputs
from keras_coatnet.hub import push_to_hub, save_timm_checkpoint
from keras_coatnet.preprocessing import decode_predictions, eval_transform, normalize_input, preprocess_input
from keras_coatnet.pretrained import list_weights
from keras_coatnet.saving import load_model
from keras_coatnet.variants import list_models

__version__ = "0.1.0"
_compat.check_keras_version()

__all__ = ["CoAtNet0", "CoAtNet1", "CoAtNet2", "CoAtNet3", "CoAtNet4", "CoAtNet5", "CoAtNet6", "CoAtNet7",
           "build_model", "create_model", "decode_predictions", "eval_transform", "feature_model", "from_pretrained",
           "from_timm_config", "layers", "list_models", "list_weights", "load_model", "load_weights", "normalize_input",
           "preprocess_input", "push_to_hub", "save_timm_checkpoint", "stage_outputs"]
