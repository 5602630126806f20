"""Domain adaptation: discrepancy measures (MMD, proxy A-distance, linear discrepancy), DANN,
reverse validation, robust learning from untrusted sources, multi-task with unlabeled tasks,
domain mapping (CycleGAN)."""

from .dann import DANN, DomainAdversarialLoss, domain_head
from .discrepancy import MMDLoss, labeled_discrepancy, linear_discrepancy, mmd, proxy_a_distance
from .domain_mapping import (
    CycleConsistencyLoss,
    CycleGAN,
    LSGANLoss,
    MappedSourceClassifier,
    conv_generator,
    mlp_discriminator,
)
from .multisource import (
    MultiTaskUnlabeled,
    UntrustedSources,
    bound_weights,
    choose_tasks_to_label,
    pairwise_discrepancies,
)
from .reverse_validation import reverse_validation, select_by_reverse_validation

__all__ = [
    "mmd",
    "MMDLoss",
    "proxy_a_distance",
    "linear_discrepancy",
    "labeled_discrepancy",
    "DANN",
    "DomainAdversarialLoss",
    "domain_head",
    "reverse_validation",
    "select_by_reverse_validation",
    "bound_weights",
    "UntrustedSources",
    "MultiTaskUnlabeled",
    "choose_tasks_to_label",
    "pairwise_discrepancies",
    "CycleGAN",
    "CycleConsistencyLoss",
    "LSGANLoss",
    "MappedSourceClassifier",
    "conv_generator",
    "mlp_discriminator",
]
