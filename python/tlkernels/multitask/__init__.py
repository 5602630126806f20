"""Multi-task learning and domain generalisation with task context (Lampert 2019, Parts III-IV):
hard / soft parameter sharing between tasks, and models conditioned on a task context vector."""

from .classifier import MultiTaskClassifier, as_task_labels
from .context import (
    ContextConcatNet,
    ContextualClassifier,
    WeightPredictingNet,
    as_context,
)
from .sharing import (
    HardSharingNet,
    PerTaskNets,
    SoftSharingPenalty,
    pairwise_sq_distance,
)

__all__ = [
    "ContextConcatNet",
    "ContextualClassifier",
    "HardSharingNet",
    "MultiTaskClassifier",
    "PerTaskNets",
    "SoftSharingPenalty",
    "WeightPredictingNet",
    "as_context",
    "as_task_labels",
    "pairwise_sq_distance",
]
