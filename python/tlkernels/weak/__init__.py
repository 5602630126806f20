"""Weak supervision (Lampert 2019, Part III): self-training with pseudo-labels, and weakly-supervised
localisation (a classifier trained on image-level labels, localised as the arg-max of its score
over windows by exhaustive search or ESS branch-and-bound)."""

from .canvas import make_canvas_digits
from .localization import box_score, integral_image, iou, localize
from .localizer import ScoreMapNet, WeakLocalizer, window_sums
from .selftraining import SelfTraining

__all__ = [
    "ScoreMapNet",
    "SelfTraining",
    "WeakLocalizer",
    "box_score",
    "integral_image",
    "iou",
    "localize",
    "make_canvas_digits",
    "window_sums",
]
