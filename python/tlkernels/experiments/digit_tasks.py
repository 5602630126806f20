"""The printed -> handwritten digit tasks: SynDigits (source) -> MNIST (target), offline.

``svhn_mnist_task`` builds the stand-in for Litany & Freedman's (2018) SVHN 0-4 -> MNIST 5-9: a labelled source
of rendered digits, a few labelled target MNIST digits split into training and validation
examples, and a target test set; both domains 32x32x3, standardised per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import (
    Dataset,
    class_split,
    load_mnist,
    make_syndigits,
    standardize_images,
    stratified_split,
)

__all__ = ["DigitTask", "svhn_mnist_task"]


@dataclass
class DigitTask:
    """source (N_s, 3, 32, 32), source_font (N_s,) SYNDIGITS_FONTS indices, source_digit (N_s,) the
    digit each source image shows; tgt_train / tgt_val the labelled target examples (training and
    validation), test the target test set; labels renumbered 0..n_classes-1 in each domain."""

    source: Dataset
    source_font: torch.Tensor
    source_digit: torch.Tensor
    tgt_train: Dataset
    tgt_val: Dataset
    test: Dataset
    n_source_classes: int
    n_target_classes: int

    def to(self, device) -> DigitTask:
        """The same task with every tensor on `device` (fonts and digits stay on the CPU)."""
        return DigitTask(self.source.to(device), self.source_font, self.source_digit, self.tgt_train.to(device),
                         self.tgt_val.to(device), self.test.to(device), self.n_source_classes,
                         self.n_target_classes)  # fmt: skip


def _standardized(d: Dataset) -> Dataset:
    return Dataset(standardize_images(d.X), d.y, d.flipped)


def svhn_mnist_task(
    n_target: int = 20,
    seed: int = 0,
    *,
    n_source: int = 5000,
    source_digits=range(5),
    target_digits=range(5, 10),
    n_test: int = 1500,
    n_val: int | None = None,
    source_style: str = "syn",
    source_seed: int = 0,
    cache_dir=None,
) -> DigitTask:
    """SynDigits `source_digits` -> MNIST `target_digits`.

    The source is make_syndigits(n_source, source_digits, source_style, source_seed): the same
    images for every seed, as a fixed source data set is. From MNIST's 5,000-image subset the
    target digits are split (stratified, by `seed`) into n_test test images and n_target
    labelled ones, of which n_val (default max(target classes, n_target // 4)) are
    the validation split every method's hyper-parameters are chosen on; the rest is trained on.
    """
    source_digits, target_digits = list(source_digits), list(target_digits)
    if n_val is None:
        n_val = max(len(target_digits), n_target // 4)
    if not 0 < n_val < n_target:
        raise ValueError(f"n_val must be in [1, n_target - 1] = [1, {n_target - 1}], got {n_val}")
    src, meta = make_syndigits(n_source, source_digits, source_style, source_seed, cache_dir=cache_dir,
                               return_meta=True)  # fmt: skip
    source = class_split(src, source_digits)
    mn = class_split(load_mnist(target_digits), target_digits)
    if n_test + n_target > len(mn):
        raise ValueError(f"n_test + n_target = {n_test + n_target} exceeds the {len(mn)} MNIST images of "
                         f"digits {target_digits}")  # fmt: skip
    test, labelled, _ = stratified_split(mn, [n_test, n_target, None], random_state=seed)
    val, train = stratified_split(labelled, [n_val, None], random_state=seed + 1)
    return DigitTask(_standardized(source), meta["font"], src.y.clone(), _standardized(train), _standardized(val),
                     _standardized(test), len(source_digits), len(target_digits))  # fmt: skip
