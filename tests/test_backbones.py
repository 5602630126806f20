"""digits_cnn: shapes, argument checks, and native per-sample products (no fallback)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlkernels import persample
from tlkernels.backbones import digits_cnn


def _ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def test_digits_cnn_shapes():
    net = digits_cnn()
    assert net(torch.randn(4, 3, 32, 32)).shape == (4, 128)
    small = digits_cnn(in_channels=1, widths=(8, 16, 24), features=10, groups=4)
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_digits_cnn_per_sample_products_native():
    torch.manual_seed(0)
    model = nn.Sequential(digits_cnn(widths=(16, 16, 32), features=24), nn.Linear(24, 5))
    batch = (torch.randn(6, 3, 32, 32), torch.randint(0, 5, (6,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", persample.PerSampleFallbackWarning)
        report = persample.verify(model, _ce, batch, fallback=False)
    assert set(report) == {n for n, _ in model.named_parameters()}
    assert max(report.values()) < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"widths": (32, 64)}, "three positive ints"), ({"groups": 5}, "groups must divide"),
     ({"in_channels": 0}, "in_channels"), ({"features": 0}, "features")],
)  # fmt: skip
def test_digits_cnn_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        digits_cnn(**kwargs)
