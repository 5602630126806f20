"""Soseleto's input validation: labels it cannot train on are refused, naming source or target."""

from __future__ import annotations

import pytest
import torch


def test_soseleto_refuses_bad_labels_naming_source_or_target():
    from tlkernels.selection import Soseleto

    torch.manual_seed(0)
    backbone = torch.nn.Linear(4, 8)
    head_s, head_t = torch.nn.Linear(8, 3), torch.nn.Linear(8, 5)
    Xs, Xt = torch.rand(20, 4), torch.rand(10, 4)
    ys, yt = torch.arange(20) % 3, torch.arange(10) % 5

    def fit(source_y, target_y):
        Soseleto(backbone, head_s, head_t, 20, epochs=1).fit((Xs, source_y), (Xt, target_y))

    fit(ys, yt)
    bad_s = ys.clone()
    bad_s[3] = -100
    with pytest.raises(ValueError, match=r"source: .*-100"):
        fit(bad_s, yt)
    with pytest.raises(ValueError, match=r"target: labels must be integers.*0\.5"):
        fit(ys, torch.tensor([0.5] + [1.0] * 9))
    fit(ys, yt.float())  # integral floats are labels
    bad_t = yt.clone()
    bad_t[0] = 7
    with pytest.raises(ValueError, match=r"target: label 7 is out of range.*\[0, 4\]"):
        fit(ys, bad_t)
    with pytest.raises(ValueError, match=r"source: label 3 .*\[0, 2\]"):
        fit(ys + 1, yt)
