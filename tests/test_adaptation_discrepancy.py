"""Discrepancy measures against known answers: MMD closed forms, identical / disjoint samples."""

from __future__ import annotations

import math

import pytest
import torch

from tlkernels.adaptation import labeled_discrepancy, linear_discrepancy, mmd, proxy_a_distance


def gauss(n, d, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def test_mmd_unbiased_matches_the_definition():
    xs, xt = gauss(7, 3, seed=1), gauss(5, 3, 0.5, seed=2)
    for kernel, k in [
        ("linear", lambda a, b: a @ b.T),
        ("rbf", lambda a, b: torch.exp(-(torch.cdist(a, b) ** 2) / (2 * 1.3**2))),
    ]:
        Kss, Ktt, Kst = k(xs, xs), k(xt, xt), k(xs, xt)
        want = (Kss.sum() - Kss.diag().sum()) / 42 + (Ktt.sum() - Ktt.diag().sum()) / 20 - 2 * Kst.mean()
        torch.testing.assert_close(mmd(xs, xt, kernel, bandwidth=1.3), want)


def test_mmd_known_answers():
    # linear kernel: MMD^2 = |mu_s - mu_t|^2, unbiased
    mu = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
    est = mmd(gauss(4000, 3, seed=3), gauss(4000, 3, seed=4) + mu, "linear")
    assert abs(float(est) - float(mu @ mu)) < 0.1
    # rbf, 1-D Gaussians N(0,1) vs N(m,1): 2 h / sqrt(h^2 + 2) (1 - exp(-m^2 / (2 (h^2 + 2))))
    h, m = 1.0, 1.5
    want = 2 * h / math.sqrt(h * h + 2) * (1 - math.exp(-m * m / (2 * (h * h + 2))))
    est = mmd(gauss(2000, 1, seed=5), gauss(2000, 1, m, seed=6), "rbf", bandwidth=h)
    assert abs(float(est) - want) < 0.02
    # same distribution: about 0 (and unbiased, so either sign)
    assert abs(float(mmd(gauss(1000, 5, seed=7), gauss(1000, 5, seed=8)))) < 0.01
    # disjoint: clearly positive
    assert float(mmd(gauss(200, 5, seed=7), gauss(200, 5, 4.0, seed=8))) > 0.5


def test_mmd_is_a_differentiable_loss():
    xs = gauss(20, 4, seed=1).requires_grad_(True)
    xt = gauss(15, 4, 1.0, seed=2)
    for kernel in ("linear", "rbf"):
        torch.autograd.gradcheck(lambda a: mmd(a, xt, kernel, bandwidth=2.0), (xs,))
    # a few gradient steps on the source points shrink the discrepancy
    x = xs.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=5.0)
    before = float(mmd(x, xt, "rbf", bandwidth=2.0).detach())
    for _ in range(20):
        opt.zero_grad()
        mmd(x, xt, "rbf", bandwidth=2.0).backward()
        opt.step()
    assert float(mmd(x, xt, "rbf", bandwidth=2.0).detach()) < 0.5 * before


def test_mmd_errors():
    with pytest.raises(ValueError, match="kernel"):
        mmd(gauss(4, 2), gauss(4, 2), "poly")
    with pytest.raises(ValueError, match="feature size"):
        mmd(gauss(4, 2), gauss(4, 3))
    with pytest.raises(ValueError, match="at least 2"):
        mmd(gauss(1, 2), gauss(4, 2))


def test_proxy_a_distance_known_answers():
    same = proxy_a_distance(gauss(400, 5, seed=1), gauss(400, 5, seed=2))
    far = proxy_a_distance(gauss(400, 5, seed=1), gauss(300, 5, 3.0, seed=2))
    assert 0.0 <= same < 0.3
    assert far > 1.9


def test_linear_discrepancy_known_answers():
    x = gauss(60, 4, seed=1)
    assert linear_discrepancy(x, x.clone()) == 0.0  # identical samples: exactly 0
    assert linear_discrepancy(x, gauss(50, 4, 6.0, seed=2)) == 1.0  # linearly separable: 1
    # a shift of the mean along one axis by 1 std: the best half-space gives about
    # Phi(0.5) - Phi(-0.5) = 0.38 on large samples
    d = linear_discrepancy(
        gauss(2000, 2, seed=3),
        gauss(2000, 2, seed=4) + torch.tensor([1.0, 0.0], dtype=torch.float64),
        restarts=1,
        steps=50,
    )
    assert 0.33 < d < 0.5


def test_labeled_discrepancy_known_answers():
    x = gauss(200, 3, seed=1)
    y = (x[:, 0] > 0).long()
    assert labeled_discrepancy(x, y, x, y) == 0.0
    assert labeled_discrepancy(x, y, x, 1 - y) > 0.9  # same inputs, flipped labels
    x2 = gauss(200, 3, seed=2)
    assert labeled_discrepancy(x, y, x2, (x2[:, 0] > 0).long()) < 0.2  # same task, new sample
