"""Self-taught clustering (Dai, Yang, Xue & Yu, ICML 2008): cluster a small unlabeled target set
with the help of a large unlabeled auxiliary set, through a feature clustering both share.

Target instances X, auxiliary instances Y and features Z give two joint distributions, p(X, Z)
and p(Y, Z), from non-negative data (each matrix divided by its sum). STC co-clusters both with
ONE feature clustering Z~ and minimises

    J = [I(X; Z) - I(X~; Z~)] + lam * [I(Y; Z) - I(Y~; Z~)]
      = KL(p(X, Z) || q(X, Z)) + lam * KL(p(Y, Z) || q(Y, Z)),

where q(x, z) = p(x~, z~) p(x | x~) p(z | z~) is Dhillon et al.'s (KDD 2003) co-clustering
approximation (and likewise for Y). The alternating updates, each of which cannot increase J:

    C_X(x) = argmin_x~ KL(p(Z | x) || q(Z | x~)),   q(z | x~) = p(z | z~) p(z~ | x~)
    C_Y(y) = argmin_y~ KL(p(Z | y) || q(Z | y~))
    C_Z(z) = argmin_z~ p_X(z) KL(p(X | z) || q(X | z~)) + lam p_Y(z) KL(p(Y | z) || q(Y | z~)),
             q(x | z~) = p(x | x~) p(x~ | z~)

(p_X(z), p_Y(z): the feature marginals of the target and auxiliary joints). With lam = 0 the
feature update sees the target only and STC is exactly Dhillon's information-theoretic
co-clustering of the target (the initial feature clustering then also ignores the auxiliary
data, so the auxiliary set has no effect at all). Initial instance clusters: k-means
(``tlkernels.KMeans``) on the rows p(Z | x); initial feature clusters: k-means on the
L2-normalised columns of the target stacked over sqrt(lam) times those of the auxiliary data.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from torch import Tensor

from .._seeding import numpy_seeds
from .._validation import as_tensor
from ..cluster import KMeans

__all__ = ["SelfTaughtClustering", "coclustering_objective"]


def _as_nonneg(X, name: str) -> Tensor:
    """(N, D) or (N, ...) non-negative numbers -> float64 (N, D')."""
    if not isinstance(X, Tensor) and np.asarray(X).ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, D) (or (N, C, H, W), flattened) with N >= 1, got {np.asarray(X).shape}"
        )
    t = as_tensor(X, name, min_ndim=2, dtype=torch.float64, finite=False).detach().cpu()
    t = t.reshape(t.shape[0], -1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    if bool((t < 0).any()):
        raise ValueError(
            f"{name} must be non-negative (a co-occurrence / intensity matrix), got minimum {float(t.min()):.4g}"
        )
    if float(t.sum()) <= 0:
        raise ValueError(f"{name} must have a positive sum, got all zeros")
    return t


def _one_hot(labels: Tensor, k: int) -> Tensor:
    return torch.nn.functional.one_hot(labels, k).to(torch.float64)


def _safe_log(q: Tensor) -> Tensor:
    return torch.where(q > 0, torch.log(q.clamp_min(1e-300)), torch.zeros_like(q))


def _cross_entropy(p: Tensor, q: Tensor) -> Tensor:
    """-sum_j p[i, j] log q[c, j] for rows i of p (N, M) and rows c of q (K, M) -> (N, K); +inf
    where p > 0 meets q = 0 (that cluster cannot explain the row)."""
    ce = -(p @ _safe_log(q).T)
    bad = ((p > 0).to(torch.float64) @ (q <= 0).to(torch.float64).T) > 0
    return ce.masked_fill(bad, math.inf)


def _blocks(P: Tensor, r: Tensor, c: Tensor, k: int, l: int) -> Tensor:
    """p(x~, z~) (k, l) from the joint P (N, M) and labels r (N,), c (M,)."""
    return _one_hot(r, k).T @ P @ _one_hot(c, l)


def coclustering_objective(
    P: Tensor, row_labels, col_labels, n_row: int | None = None, n_col: int | None = None
) -> float:
    """KL(p || q) = I(X; Z) - I(X~; Z~) of a co-clustering of the joint P (N, M) (sums to 1)
    with row labels (N,) and column labels (M,)."""
    P = torch.as_tensor(P, dtype=torch.float64)
    r = torch.as_tensor(np.asarray(row_labels), dtype=torch.long)
    c = torch.as_tensor(np.asarray(col_labels), dtype=torch.long)
    k = int(r.max()) + 1 if n_row is None else n_row
    l = int(c.max()) + 1 if n_col is None else n_col
    B = _blocks(P, r, c, k, l)
    px, pz = P.sum(1), P.sum(0)
    bx, bz = B.sum(1), B.sum(0)
    q = B[r][:, c] * (px / bx[r].clamp_min(1e-300))[:, None] * (pz / bz[c].clamp_min(1e-300))[None]
    m = P > 0
    return float((P[m] * (torch.log(P[m]) - torch.log(q[m]))).sum())


class _Side:
    """One co-clustered instance set: joint P (N, M), row labels, k clusters."""

    def __init__(self, P: Tensor, labels: Tensor, k: int):
        self.P, self.labels, self.k = P, labels, k
        self.px, self.pz = P.sum(1), P.sum(0)
        self.rows = P / self.px.clamp_min(1e-300)[:, None]  # p(Z | x), (N, M)

    def blocks(self, c: Tensor, l: int) -> Tensor:
        return _blocks(self.P, self.labels, c, self.k, l)

    def update_rows(self, c: Tensor, l: int) -> int:
        """C(x) = argmin KL(p(Z|x) || q(Z|x~)); keeps the current cluster on ties. Returns #changes."""
        B = self.blocks(c, l)
        bx, bz = B.sum(1), B.sum(0)
        q = (B / bx.clamp_min(1e-300)[:, None])[:, c] * (self.pz / bz[c].clamp_min(1e-300))[None]  # (k, M)
        q[bx <= 0] = 0.0
        cost = _cross_entropy(self.rows, q)  # (N, k)
        return self._assign(cost, self.px > 0)

    def _assign(self, cost: Tensor, movable: Tensor) -> int:
        cur = self.labels
        best = cost.argmin(1)
        keep = cost.gather(1, cur[:, None])[:, 0] <= cost.gather(1, best[:, None])[:, 0] * (1 + 1e-12) + 1e-15
        new = torch.where(keep | ~movable, cur, best)
        changed = int((new != cur).sum())
        self.labels = new
        return changed

    def column_cost(self, c: Tensor, l: int) -> Tensor:
        """-sum_x p(x, z) log q(x | z~) -> (M, l): the z-part of this side's KL for each z~."""
        B = self.blocks(c, l)
        bx, bz = B.sum(1), B.sum(0)
        q = (self.px / bx[self.labels].clamp_min(1e-300))[:, None] * (B / bz.clamp_min(1e-300)[None])[self.labels]
        q[:, bz <= 0] = 0.0
        return _cross_entropy(self.P.T.contiguous(), q.T.contiguous())  # (M, l)

    def objective(self, c: Tensor, l: int) -> float:
        return coclustering_objective(self.P, self.labels, c, self.k, l)


def _check_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return int(v)


class SelfTaughtClustering(ClusterMixin, BaseEstimator):
    """Self-taught clustering: co-cluster target and auxiliary data with one shared feature
    clustering (module docstring for the objective and updates).

    Args:
        n_clusters: target clusters K.
        n_feature_clusters: feature clusters L (shared by both co-clusterings).
        n_aux_clusters: auxiliary clusters (default: n_clusters).
        lam: weight λ >= 0 of the auxiliary co-clustering; 0 = plain co-clustering of the target.
        max_iter: maximum alternating rounds (rows of X and Y, then features); tol: stop when J
            decreases by less than tol (relative) or no label changes.
        n_init: k-means restarts of every initialisation; random_state; verbose (tqdm bar).

    fit(X_target (N, D...), X_aux (N_a, D...) or None, sample_weight (N,) or None) -> self.
    Inputs must be non-negative (they are turned into joint distributions); images are flattened.

    Attributes: labels_ (N,) target clusters, aux_labels_ (N_a,) or None, feature_labels_ (D,),
    objective_history_ (list of {"objective", "target", "aux"}, entry 0 = after initialisation),
    n_iter_, converged_.
    """

    def __init__(
        self,
        n_clusters: int,
        n_feature_clusters: int,
        n_aux_clusters: int | None = None,
        lam: float = 1.0,
        max_iter: int = 50,
        tol: float = 1e-9,
        n_init: int = 5,
        random_state=None,
        verbose: bool = False,
    ):
        self.n_clusters = n_clusters
        self.n_feature_clusters = n_feature_clusters
        self.n_aux_clusters = n_aux_clusters
        self.lam = lam
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.random_state = random_state
        self.verbose = verbose

    # -- initialisation ----------------------------------------------------------------------
    def _kmeans(self, V: Tensor, k: int, seed: int) -> Tensor:
        km = KMeans(k, n_init=self.n_init, random_state=seed).fit(V.to(torch.float64))
        return torch.as_tensor(km.labels_, dtype=torch.long)

    def _init_features(self, Pt: Tensor, Pa: Tensor | None, lam: float, L: int, seed: int) -> Tensor:
        def unit_cols(P):
            return (P / P.norm(dim=0).clamp_min(1e-300)[None]).T  # (M, N)

        V = unit_cols(Pt)
        if Pa is not None and lam > 0:
            V = torch.cat([V, math.sqrt(lam) * unit_cols(Pa)], 1)
        return self._kmeans(V, L, seed)

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, X_target, X_aux=None, sample_weight=None) -> SelfTaughtClustering:
        """X_target (N, D) or (N, C, H, W) >= 0, X_aux (N_a, D) or None; returns self."""
        from tqdm.auto import tqdm

        K = _check_int(self.n_clusters, "n_clusters")
        L = _check_int(self.n_feature_clusters, "n_feature_clusters")
        Ka = K if self.n_aux_clusters is None else _check_int(self.n_aux_clusters, "n_aux_clusters")
        _check_int(self.max_iter, "max_iter", 0)
        _check_int(self.n_init, "n_init")
        if not isinstance(self.lam, numbers.Real) or not math.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam!r}")
        lam = float(self.lam)
        Xt = _as_nonneg(X_target, "X_target")
        if sample_weight is not None:
            w = torch.as_tensor(np.asarray(sample_weight), dtype=torch.float64).flatten()
            if w.shape[0] != Xt.shape[0] or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError(f"sample_weight must be ({Xt.shape[0]},) finite and >= 0, got shape {tuple(w.shape)}")
            Xt = Xt * w[:, None]
        if K > Xt.shape[0]:
            raise ValueError(f"n_clusters={K} must be <= the {Xt.shape[0]} rows of X_target")
        if L > Xt.shape[1]:
            raise ValueError(f"n_feature_clusters={L} must be <= the {Xt.shape[1]} features")
        Xa = None
        if X_aux is not None:
            Xa = _as_nonneg(X_aux, "X_aux")
            if Xa.shape[1] != Xt.shape[1]:
                raise ValueError(f"X_aux must have the {Xt.shape[1]} features of X_target, got {Xa.shape[1]}")
            if Ka > Xa.shape[0]:
                raise ValueError(f"n_aux_clusters={Ka} must be <= the {Xa.shape[0]} rows of X_aux")
        seeds = numpy_seeds(self.random_state, 3)
        Pt = Xt / Xt.sum()
        Pa = None if Xa is None else Xa / Xa.sum()
        use_aux = Pa is not None and lam > 0

        tgt = _Side(Pt, self._kmeans(Pt / Pt.sum(1, keepdim=True).clamp_min(1e-300), K, int(seeds[0])), K)
        aux = None
        if use_aux:
            aux = _Side(Pa, self._kmeans(Pa / Pa.sum(1, keepdim=True).clamp_min(1e-300), Ka, int(seeds[1])), Ka)
        c = self._init_features(Pt, Pa, lam, L, int(seeds[2]))
        movable_z = Pt.sum(0) > 0
        if use_aux:
            movable_z = movable_z | (Pa.sum(0) > 0)

        def record():
            jt = tgt.objective(c, L)
            ja = aux.objective(c, L) if aux is not None else 0.0
            return {"objective": jt + lam * ja, "target": jt, "aux": ja}

        history = [record()]
        converged = False
        it = 0
        for it in tqdm(range(1, self.max_iter + 1), desc="STC", disable=not self.verbose, leave=False):
            changes = tgt.update_rows(c, L)
            if aux is not None:
                changes += aux.update_rows(c, L)
            cost = tgt.column_cost(c, L)
            if aux is not None:
                cost = cost + lam * aux.column_cost(c, L)
            best = cost.argmin(1)
            keep = cost.gather(1, c[:, None])[:, 0] <= cost.gather(1, best[:, None])[:, 0] * (1 + 1e-12) + 1e-15
            new_c = torch.where(keep | ~movable_z, c, best)
            changes += int((new_c != c).sum())
            c = new_c
            history.append(record())
            prev, cur = history[-2]["objective"], history[-1]["objective"]
            if changes == 0 or prev - cur <= self.tol * max(abs(prev), 1e-12):
                converged = True
                break
        self.labels_ = tgt.labels.numpy()
        self.aux_labels_ = None if aux is None else aux.labels.numpy()
        self.feature_labels_ = c.numpy()
        self.objective_history_ = history
        self.objective_ = history[-1]["objective"]
        self.n_iter_ = it
        self.converged_ = converged
        self.n_features_in_ = int(Xt.shape[1])
        return self

    def fit_predict(self, X_target, X_aux=None, sample_weight=None) -> np.ndarray:
        """fit, then labels_ (N,)."""
        return self.fit(X_target, X_aux, sample_weight).labels_
