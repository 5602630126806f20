"""Representation transfer: pretrained features, fine-tuning, flextuning, layer transfer,
conservative training (L2-SP, output constraints), progressive nets, self-supervised and
self-taught pretraining. Estimators follow docs/design.md §5 (scikit-learn style)."""

from .._deprecation import moved_names
from ._common import param_layers
from .conservative import L2SPLoss, OutputConstraintLoss
from .distill import Distill, DistillationLoss, distillation_targets, tempered_probs
from .features import FeatureProbe, extract_features
from .finetune import FineTune, Flextune, finetune_tradeoff, plot_tradeoff
from .layers import LayerTransfer, sweep_layer_transfer, transfer_layers
from .progressive import ProgressiveNet
from .selfsup import (
    Autoencoder,
    RotationPretrainer,
    mirror_decoder,
    rotation_accuracy,
)
from .selftaught import SelfTaught
from .selftaught_clustering import SelfTaughtClustering, coclustering_objective

__all__ = [
    "Autoencoder",
    "Distill",
    "DistillationLoss",
    "FeatureProbe",
    "FineTune",
    "Flextune",
    "L2SPLoss",
    "LayerTransfer",
    "OutputConstraintLoss",
    "ProgressiveNet",
    "RotationPretrainer",
    "SelfTaught",
    "SelfTaughtClustering",
    "coclustering_objective",
    "distillation_targets",
    "extract_features",
    "finetune_tradeoff",
    "mirror_decoder",
    "param_layers",
    "plot_tradeoff",
    "rotation_accuracy",
    "sweep_layer_transfer",
    "tempered_probs",
    "transfer_layers",
]

# N_ROTATIONS and rotate4 moved to tlkernels.selfsup (the rotation task); this path stays one release.
__getattr__ = moved_names(__name__, {"N_ROTATIONS": "tlkernels.selfsup", "rotate4": "tlkernels.selfsup"})
