"""Domain adaptation: discrepancy measures (MMD, proxy A-distance, linear discrepancy), DANN,
reverse validation, robust learning from untrusted sources, multi-task with unlabeled tasks."""

from .dann import DANN, DomainAdversarialLoss, domain_head
from .discrepancy import MMDLoss, labeled_discrepancy, linear_discrepancy, mmd, proxy_a_distance
from .reverse_validation import reverse_validation, select_by_reverse_validation

__all__ = ["mmd", "MMDLoss", "proxy_a_distance", "linear_discrepancy", "labeled_discrepancy",
           "DANN", "DomainAdversarialLoss", "domain_head", "reverse_validation",
           "select_by_reverse_validation"]
