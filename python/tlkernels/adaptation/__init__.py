"""Domain adaptation: discrepancy measures (MMD, proxy A-distance, linear discrepancy), DANN,
reverse validation, robust learning from untrusted sources, multi-task with unlabeled tasks."""

from .discrepancy import MMDLoss, labeled_discrepancy, linear_discrepancy, mmd, proxy_a_distance

__all__ = ["mmd", "MMDLoss", "proxy_a_distance", "linear_discrepancy", "labeled_discrepancy"]
