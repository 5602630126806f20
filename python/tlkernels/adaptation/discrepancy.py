"""Distances between two samples (source vs target): MMD, proxy A-distance, linear discrepancy,
and the label-aware discrepancy used to weight untrusted sources.

Shapes: Xs (N, *), Xt (M, *) (flattened to (N, D), (M, D)); ys (N,), yt (M,) int64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._util import single_thread

__all__ = ["mmd", "MMDLoss", "proxy_a_distance", "linear_discrepancy", "labeled_discrepancy"]


def _flat(X, name: str, dtype=None) -> Tensor:
    X = torch.as_tensor(X)
    if X.dim() < 1 or X.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty array of shape (N, *), got {tuple(X.shape)}")
    if not X.is_floating_point():
        X = X.float()
    if dtype is not None:
        X = X.to(dtype)
    return X.reshape(X.shape[0], -1)


def _median_bandwidth(Xs: Tensor, Xt: Tensor) -> Tensor:
    """Median heuristic: the median pairwise distance of the pooled sample (at most 1000 points)."""
    Z = torch.cat([Xs, Xt]).detach()
    if Z.shape[0] > 1000:
        Z = Z[torch.linspace(0, Z.shape[0] - 1, 1000).long()]
    d = torch.cdist(Z, Z)
    d = d[~torch.eye(Z.shape[0], dtype=torch.bool, device=Z.device)]
    med = d.median() if d.numel() else torch.ones((), dtype=Z.dtype, device=Z.device)
    return torch.where(med > 0, med, torch.ones_like(med))


def mmd(Xs, Xt, kernel: str = "rbf", bandwidth: float | Tensor | None = None) -> Tensor:
    """Unbiased estimate of the squared maximum mean discrepancy MMD^2_u (Gretton et al. 2012).

    MMD^2_u = sum_{i!=j} k(s_i, s_j) / (N(N-1)) + sum_{i!=j} k(t_i, t_j) / (M(M-1))
              - 2 sum_{i,j} k(s_i, t_j) / (NM).
    Xs (N, *), Xt (M, *) with N, M >= 2. kernel 'linear' (k = x.y; O((N+M) D), no kernel matrix)
    or 'rbf' (k = exp(-|x-y|^2 / (2 h^2)), h = `bandwidth` or the median pairwise distance of the
    pooled sample, detached). Returns a 0-dim tensor, differentiable w.r.t. Xs and Xt, so it
    doubles as a training loss; it is unbiased, hence can be slightly negative when the
    distributions agree.
    """
    Xs, Xt = _flat(Xs, "Xs"), _flat(Xt, "Xt")
    if Xs.shape[0] < 2 or Xt.shape[0] < 2:
        raise ValueError(f"mmd needs at least 2 points per sample, got Xs {tuple(Xs.shape)}, Xt {tuple(Xt.shape)}")
    if Xs.shape[1] != Xt.shape[1]:
        raise ValueError(f"Xs and Xt must have the same feature size, got {Xs.shape[1]} and {Xt.shape[1]}")
    n, m = Xs.shape[0], Xt.shape[0]
    if kernel == "linear":
        ss, st = Xs.sum(0), Xt.sum(0)
        kss = (ss @ ss - (Xs * Xs).sum()) / (n * (n - 1))
        ktt = (st @ st - (Xt * Xt).sum()) / (m * (m - 1))
        return kss + ktt - 2 * (ss @ st) / (n * m)
    if kernel != "rbf":
        raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
    h = _median_bandwidth(Xs, Xt) if bandwidth is None else torch.as_tensor(bandwidth, dtype=Xs.dtype)
    if float(h) <= 0:
        raise ValueError(f"bandwidth must be > 0, got {float(h)}")
    g = 1.0 / (2 * h * h)

    def k(A, B):
        return torch.exp(-g * torch.cdist(A, B).pow(2))

    Kss, Ktt = k(Xs, Xs), k(Xt, Xt)
    # the diagonal is exactly exp(0) = 1
    kss = (Kss.sum() - n) / (n * (n - 1))
    ktt = (Ktt.sum() - m) / (m * (m - 1))
    return kss + ktt - 2 * k(Xs, Xt).mean()


class MMDLoss(torch.nn.Module):
    """``mmd`` as a loss module: forward(features_s (N, F), features_t (M, F)) -> 0-dim MMD^2_u."""

    def __init__(self, kernel: str = "rbf", bandwidth: float | None = None):
        super().__init__()
        self.kernel, self.bandwidth = kernel, bandwidth

    def forward(self, fs: Tensor, ft: Tensor) -> Tensor:
        return mmd(fs, ft, self.kernel, self.bandwidth)


def _split_half(n: int, rng: np.random.Generator, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    p = rng.permutation(n)
    k = max(1, min(n - 1, int(round(test_fraction * n))))
    return p[k:], p[:k]


def proxy_a_distance(Xs, Xt, classifier=None, test_fraction: float = 0.5, random_state=0) -> float:
    """Proxy A-distance (Ben-David et al. 2007): 2 (1 - 2 eps), eps the held-out error of a
    domain classifier (source vs target).

    Xs (N, *), Xt (M, *), N, M >= 2. The classifier (default: scikit-learn's LogisticRegression,
    C=1) is trained on a random (1 - test_fraction) of each sample and eps is its *balanced*
    error (mean of the two per-domain errors) on the rest, so unequal sizes do not bias it.
    eps is clipped to [0, 0.5] (a classifier worse than chance is no evidence of a difference),
    so the result lies in [0, 2]: about 0 for one distribution, 2 for separable samples.
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression

    Xs, Xt = _flat(Xs, "Xs").double().cpu().numpy(), _flat(Xt, "Xt").double().cpu().numpy()
    if len(Xs) < 2 or len(Xt) < 2:
        raise ValueError(f"proxy_a_distance needs at least 2 points per sample, got {len(Xs)} and {len(Xt)}")
    if Xs.shape[1] != Xt.shape[1]:
        raise ValueError(f"Xs and Xt must have the same feature size, got {Xs.shape[1]} and {Xt.shape[1]}")
    rng = np.random.default_rng(random_state)
    (s_tr, s_te), (t_tr, t_te) = _split_half(len(Xs), rng, test_fraction), _split_half(len(Xt), rng, test_fraction)
    clf = clone(classifier) if classifier is not None else LogisticRegression(C=1.0, max_iter=2000)
    X = np.concatenate([Xs[s_tr], Xt[t_tr]])
    d = np.concatenate([np.zeros(len(s_tr)), np.ones(len(t_tr))])
    clf.fit(X, d)
    err_s = float(np.mean(clf.predict(Xs[s_te]) != 0))
    err_t = float(np.mean(clf.predict(Xt[t_te]) != 1))
    eps = min(0.5, 0.5 * (err_s + err_t))
    return 2.0 * (1.0 - 2.0 * eps)


def _linear_pair_search(
    A: Tensor, B: Tensor, objective, restarts: int, steps: int, lr: float, gen: torch.Generator, init=None
) -> float:
    """Maximises a hard objective of two linear scorers (w_g, b_g), (w_h, b_h) over A (N, D),
    B (M, D) by Adam on its sigmoid relaxation, from `restarts` random starts (plus `init`);
    returns the best hard value seen."""
    d = A.shape[1]
    best = 0.0
    starts = list(init or [])
    for _ in range(restarts):
        starts.append(torch.randn(2, d + 1, generator=gen, dtype=A.dtype))
    for w0 in starts:
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        for it in range(steps + 1):
            soft = objective(A, B, w, hard=False)
            with torch.no_grad():
                best = max(best, float(objective(A, B, w, hard=True)))
            if it == steps:
                break
            opt.zero_grad()
            (-soft).backward()
            opt.step()
    return best


def _standardize(Xs: Tensor, Xt: Tensor) -> tuple[Tensor, Tensor]:
    Z = torch.cat([Xs, Xt])
    mu, sd = Z.mean(0), Z.std(0).clamp_min(1e-8)
    return (Xs - mu) / sd, (Xt - mu) / sd


def _scores(X: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    return X @ w[0, :-1] + w[0, -1], X @ w[1, :-1] + w[1, -1]


def linear_discrepancy(
    Xs, Xt, restarts: int = 4, steps: int = 200, lr: float = 0.05, temperature: float = 0.1, random_state=0
) -> float:
    """The discrepancy distance of Lampert 2019 for binary linear hypotheses,

        disc(S, S') = max_{g, h in H} | mean_S 1[g != h] - mean_S' 1[g != h] |,

    on the samples themselves (an empirical quantity in [0, 1]: 0 for identical samples, 1 when
    a linear classifier separates them, since h may be a constant and then {g != h} is a
    half-space). The exact maximum is NP-hard; this returns a lower bound found by maximising a
    sigmoid relaxation with Adam over (g, h) from several random starts and from the pair
    (logistic domain classifier, constant), evaluating the hard objective along the way.
    Inputs are standardised with the pooled mean and std. Xs (N, *), Xt (M, *).
    """
    Xs, Xt = _flat(Xs, "Xs", torch.float64).cpu(), _flat(Xt, "Xt", torch.float64).cpu()
    if Xs.shape[1] != Xt.shape[1]:
        raise ValueError(f"Xs and Xt must have the same feature size, got {Xs.shape[1]} and {Xt.shape[1]}")
    Xs, Xt = _standardize(Xs, Xt)
    gen = torch.Generator().manual_seed(int(random_state))

    def objective(A, B, w, hard):
        ga, ha = _scores(A, w)
        gb, hb = _scores(B, w)
        if hard:
            da, db = ((ga > 0) != (ha > 0)).double(), ((gb > 0) != (hb > 0)).double()
            return (da.mean() - db.mean()).abs()
        pa, qa = torch.sigmoid(ga / temperature), torch.sigmoid(ha / temperature)
        pb, qb = torch.sigmoid(gb / temperature), torch.sigmoid(hb / temperature)
        da, db = pa * (1 - qa) + qa * (1 - pa), pb * (1 - qb) + qb * (1 - pb)
        return (da.mean() - db.mean()).abs()

    # start from a half-space: a logistic domain classifier g and the constant h = -1
    from sklearn.linear_model import LogisticRegression

    X = torch.cat([Xs, Xt]).numpy()
    d = np.r_[np.ones(len(Xs)), np.zeros(len(Xt))]
    lr_clf = LogisticRegression(C=10.0, max_iter=2000).fit(X, d)
    w0 = torch.zeros(2, Xs.shape[1] + 1, dtype=torch.float64)
    w0[0, :-1] = torch.tensor(lr_clf.coef_[0])
    w0[0, -1] = float(lr_clf.intercept_[0])
    w0[1, -1] = -1.0
    with single_thread():
        return _linear_pair_search(Xs, Xt, objective, restarts, steps, lr, gen, init=[w0])


def labeled_discrepancy(
    Xa, ya, Xb, yb, n_classes: int | None = None, restarts: int = 2, steps: int = 200, lr: float = 0.05, random_state=0
) -> float:
    """Label-aware discrepancy for linear (softmax) hypotheses, the quantity of Konstantinov &
    Lampert (2019) and Pentina & Lampert (2017):

        disc((Xa, ya), (Xb, yb)) = max_h | err_a(h) - err_b(h) |,   err the 0-1 error.

    A lower bound: a linear softmax classifier is trained by Adam to maximise the relaxed
    difference (1 - p_h(y|x) as the soft error) in each direction, from a few starts; the
    hard difference is tracked. In [0, 1]: 0 for the same labelled sample, large when the same
    inputs carry different labels. Xa (N, *), ya (N,), Xb (M, *), yb (M,).
    """
    Xa, Xb = _flat(Xa, "Xa", torch.float64).cpu(), _flat(Xb, "Xb", torch.float64).cpu()
    ya, yb = torch.as_tensor(ya).long().cpu(), torch.as_tensor(yb).long().cpu()
    if ya.shape != (Xa.shape[0],) or yb.shape != (Xb.shape[0],):
        raise ValueError(
            f"ya must have shape ({Xa.shape[0]},) and yb ({Xb.shape[0]},), got {tuple(ya.shape)}, {tuple(yb.shape)}"
        )
    Xa, Xb = _standardize(Xa, Xb)
    c = int(n_classes or int(max(ya.max(), yb.max())) + 1)
    gen = torch.Generator().manual_seed(int(random_state))
    # all starts in one batch: K = 2 * restarts linear softmax models, half maximising
    # err_a - err_b, half err_b - err_a
    k = 2 * restarts
    sign = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat_interleave(restarts)
    W = (0.01 * torch.randn(k, Xa.shape[1] + 1, c, generator=gen, dtype=torch.float64)).requires_grad_(True)
    with single_thread():
        return _labeled_search(Xa, ya, Xb, yb, W, sign, steps, lr)


def _labeled_search(Xa, ya, Xb, yb, W, sign, steps, lr) -> float:
    k = W.shape[0]
    opt = torch.optim.Adam([W], lr=lr)
    best = 0.0
    for it in range(steps + 1):
        la = Xa @ W[:, :-1] + W[:, None, -1]
        lb = Xb @ W[:, :-1] + W[:, None, -1]
        with torch.no_grad():
            hard = (la.argmax(2) != ya).double().mean(1) - (lb.argmax(2) != yb).double().mean(1)
            best = max(best, float(hard.abs().max()))
        if it == steps or best >= 1.0:
            break
        # soft errors 1 - p(y|x)
        ea = 1 - la.softmax(2).gather(2, ya.expand(k, -1)[..., None]).mean((1, 2))
        eb = 1 - lb.softmax(2).gather(2, yb.expand(k, -1)[..., None]).mean((1, 2))
        opt.zero_grad()
        (-(sign * (ea - eb)).sum()).backward()
        opt.step()
    return best
