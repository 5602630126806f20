"""k-means on the tlkernels assignment / update ops (docs/design.md §4.3).

``KMeans`` follows scikit-learn's Lloyd semantics (mean-centred data, tol relative to the mean
feature variance, strict-or-shift convergence test, empty clusters relocated to the points
farthest from their centres, greedy k-means++ with 2 + ln K local trials) and adds a cosine mode
(``spherical=True``), a device, and a distributed mode. ``batched_kmeans`` solves P independent
problems at once; the ``n_init`` runs of every problem are extra problems of the same batched op
calls (the data is read once per iteration for all runs).

Problem numbering: with P data sets and R = n_init runs, problem ``p * R + r`` is run r of data
set p, which is what the ops expect (problem q reads X[q // R]).

``KMeans`` honours scikit-learn's estimator contract (its own KMeans tests and
``check_estimator`` pass; see tests/sklearn_kmeans and tests/test_kmeans_estimator_checks.py);
scipy sparse X takes a separate CPU path (``_solve_sparse``) with the same semantics.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils import check_random_state
from sklearn.utils.sparsefuncs import mean_variance_axis
from torch import Tensor

from . import ops
from ._validation import (
    DistinctClustersWarning,
    check_fitted,
    check_n_features,
    check_X,
)

__all__ = ["BatchedKMeansResult", "KMeans", "batched_kmeans", "kmeans_plusplus"]


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------
def _to_tensor(X, name: str, device, dims: tuple[int, ...]) -> Tensor:
    """numpy / torch / nested lists -> a float32 or float64 tensor on `device` (integers become
    float64 and float16 / bfloat16 float32, as scikit-learn does), with its dimension checked."""
    if not isinstance(X, Tensor):
        arr = np.asarray(X)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name} must hold numbers, got an array of dtype {arr.dtype}")
        X = torch.from_numpy(np.ascontiguousarray(arr))
    if X.is_complex():
        raise ValueError(f"{name} must be real, got {X.dtype}")
    if not X.is_floating_point():
        X = X.to(torch.float64)
    elif X.dtype in (torch.float16, torch.bfloat16):
        X = X.to(torch.float32)
    if X.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {want}, got shape {tuple(X.shape)}")
    return X.to(device) if device is not None else X


def _check_finite(X: Tensor, name: str) -> None:
    if X.numel() and not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")


def _make_generator(random_state) -> torch.Generator:
    """A CPU torch.Generator from None / int / numpy RandomState or Generator / torch.Generator."""
    if isinstance(random_state, torch.Generator):
        return random_state
    gen = torch.Generator()
    if random_state is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1)
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, 2**31 - 1))
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, 2**63 - 1))
    elif isinstance(random_state, numbers.Integral):
        seed = int(random_state)
    else:
        raise ValueError(
            f"random_state must be None, an int, a numpy RandomState / Generator or a torch.Generator, "
            f"got {type(random_state).__name__}"
        )
    return gen.manual_seed(seed)


class _Comm:
    """The collective operations of distributed mode; identities in a single process."""

    def __init__(self, distributed: bool):
        self.on = bool(distributed)
        if self.on:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("distributed=True needs an initialised torch.distributed process group")
            self.dist = dist
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world = 0, 1

    def sum_(self, t: Tensor) -> Tensor:
        if self.on:
            self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM)
        return t

    def max_(self, t: Tensor) -> Tensor:
        if self.on:
            self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return t

    def broadcast_(self, t: Tensor) -> Tensor:
        if self.on:
            self.dist.broadcast(t, src=0)
        return t

    def gather(self, t: Tensor) -> Tensor:
        """Concatenation over ranks (in rank order) along dim 0; t has the same shape on all."""
        if not self.on:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        self.dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, 0)


# ---------------------------------------------------------------------------------------------
# initialisation
# ---------------------------------------------------------------------------------------------
def kmeans_plusplus(
    X: Tensor,
    n_clusters: int,
    weights: Tensor | None = None,
    n_init: int = 1,
    generator: torch.Generator | None = None,
    n_local_trials: int | None = None,
) -> Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii; scikit-learn's variant) for n_init runs of each
    of P data sets, all in the same batched op calls.

    X: (P, N, D) float. weights: (P, N) non-negative sampling weights (zero excludes a row) or
    None. Returns centres (P * n_init, K, D), problem p * n_init + r being run r of data set p.
    Every step draws 2 + ln K candidates per run with probability ∝ w·D² and keeps the one that
    lowers the potential most; the D² updates of all candidates of all runs are one assignment
    call (each candidate a one-centroid problem), which reads X once.
    """
    P, N, D = X.shape
    dev = X.device
    return _greedy_kmeans_pp(
        lambda d, r: X[d.to(dev), r.to(dev)],
        lambda pts: ops.kmeans_assign(X, pts)[1],
        (P, N, D),
        X.dtype,
        dev,
        n_clusters,
        weights,
        n_init,
        generator,
        n_local_trials,
    )


def _greedy_kmeans_pp(
    rows,
    dist,
    shape,
    dtype,
    dev,
    n_clusters,
    weights,
    n_init,
    generator,
    n_local_trials,
) -> Tensor:
    """kmeans_plusplus on any representation of X (P, N, D) = shape: rows(d, r) gathers the rows
    r of data sets d (index tensors of one shape) -> (..., D); dist(pts) gives the squared
    distances of the (M, 1, D) points to every row of their data set -> (M, N) (point m reading
    data set m // (M / P))."""
    P, N, D = shape
    K, R = int(n_clusters), P * n_init
    L = n_local_trials if n_local_trials is not None else 2 + int(math.log(K))
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    w = torch.ones(P, N, dtype=torch.float64) if weights is None else weights.detach().to("cpu", torch.float64)
    w = w.repeat_interleave(n_init, 0)  # (R, N)
    data_of = torch.arange(R) // n_init  # (R,)
    ar = torch.arange(R)
    centers = torch.empty(R, K, D, dtype=dtype, device=dev)
    first = torch.multinomial(w, 1, generator=gen)[:, 0]  # (R,)
    centers[:, 0] = rows(data_of, first)
    closest = dist(centers[:, :1]).to("cpu", torch.float64)  # (R, N)
    # unweighted: the products with w = 1 are skipped (exact either way); the (R, L, N) float64
    # block is updated in place (it is the largest temporary)
    weigh = (lambda t, w: t) if weights is None else (lambda t, w: t * w)
    pot = weigh(closest, w).sum(1)
    for c in range(1, K):
        rand = torch.rand(R, L, generator=gen, dtype=torch.float64) * pot[:, None]
        cum = torch.cumsum(weigh(closest, w), 1)
        cand = torch.searchsorted(cum, rand).clamp_(max=N - 1)  # (R, L)
        cand_pts = rows(data_of[:, None].expand(R, L), cand)  # (R, L, D)
        dc = dist(cand_pts.reshape(R * L, 1, D))  # (R * L, N)
        dc = dc.view(R, L, N).to("cpu", torch.float64)
        torch.minimum(dc, closest[:, None], out=dc)
        pots = weigh(dc, w[:, None]).sum(-1)  # (R, L)
        best = pots.argmin(1)
        closest, pot = dc[ar, best], pots[ar, best]
        centers[:, c] = cand_pts[ar.to(dev), best.to(dev)]
    return centers


def _random_rows(P: int, N: int, K: int, weights, n_init: int, gen: torch.Generator) -> Tensor:
    """K distinct row indices per run, drawn with probability ∝ weight -> (P * n_init, K)."""
    w = torch.ones(P, N, dtype=torch.float64) if weights is None else weights.detach().to("cpu", torch.float64)
    w = w.repeat_interleave(n_init, 0)
    return torch.multinomial(w, K, replacement=False, generator=gen)  # (R, K)


def _random_init(X: Tensor, K: int, weights: Tensor | None, n_init: int, gen: torch.Generator) -> Tensor:
    """K distinct rows per run, drawn with probability ∝ weight. X (P, N, D) -> (P * n_init, K, D)."""
    P, N, _ = X.shape
    idx = _random_rows(P, N, K, weights, n_init, gen)
    data_of = torch.arange(P * n_init) // n_init
    return X[data_of[:, None].to(X.device), idx.to(X.device)]


# ---------------------------------------------------------------------------------------------
# the batched Lloyd solver
# ---------------------------------------------------------------------------------------------
@dataclass
class BatchedKMeansResult:
    """Result of ``batched_kmeans`` for P problems: centers (P, K, D), labels (P, N) int64 (-1
    on padding rows), inertia (P,) float64, n_iter (P,) int64."""

    centers: Tensor
    labels: Tensor
    inertia: Tensor
    n_iter: Tensor


def _relocate_empty(
    Xd: Tensor,
    W: Tensor | None,
    valid: Tensor | None,
    labels: Tensor,
    d2: Tensor,
    sums: Tensor,
    counts: Tensor,
    problems: list[int],
    n_per_x: int,
    comm: _Comm,
) -> None:
    """scikit-learn's relocation, in place on sums (Pa, K, D) / counts (Pa, K): every empty
    cluster of a problem takes the point farthest from its centre (largest dist2 first), which
    leaves its old cluster. Ranks agree on the candidates through an all-gather."""
    for p in problems:
        empty = torch.nonzero(counts[p] == 0).flatten()
        n_empty = int(empty.numel())
        x_of = p // n_per_x
        dist = d2[p].to(torch.float64).clone()
        if valid is not None:
            dist[~valid[x_of]] = -math.inf
        m = min(n_empty, dist.numel())
        order = torch.sort(dist, descending=True, stable=True).indices[:m]
        cand_d = torch.full((n_empty,), -math.inf, dtype=torch.float64, device=dist.device)
        cand_x = torch.zeros(n_empty, Xd.shape[-1], dtype=Xd.dtype, device=Xd.device)
        cand_w = torch.zeros(n_empty, dtype=Xd.dtype, device=Xd.device)
        cand_l = torch.zeros(n_empty, dtype=torch.long, device=Xd.device)
        cand_d[:m] = dist[order]
        cand_x[:m] = Xd[x_of, order]
        cand_w[:m] = 1 if W is None else W[x_of, order]
        cand_l[:m] = labels[p, order]
        if comm.on:
            cand_d, cand_x, cand_w, cand_l = (comm.gather(t) for t in (cand_d, cand_x, cand_w, cand_l))
            pick = torch.sort(cand_d, descending=True, stable=True).indices[:n_empty]
            cand_d, cand_x, cand_w, cand_l = (
                cand_d[pick],
                cand_x[pick],
                cand_w[pick],
                cand_l[pick],
            )
        for j in range(n_empty):
            # a point at distance 0 (a duplicate of its centre) cannot found a cluster: as in
            # scikit-learn, the cluster then stays empty, at its old centre
            if not cand_d[j] > 0:
                break
            new, old = int(empty[j]), int(cand_l[j])
            xw = cand_x[j] * cand_w[j]
            sums[p, old] -= xw
            sums[p, new] = xw
            counts[p, new] = cand_w[j]
            counts[p, old] -= cand_w[j]


def _solve(
    X: Tensor,
    K: int,
    weights: Tensor | None,
    valid: Tensor | None,
    init,
    n_init,
    max_iter: int,
    tol: float,
    gen: torch.Generator,
    spherical: bool,
    verbose: bool,
    comm: _Comm,
    desc: str,
    centre_in_place: bool = False,
    messages: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Lloyd for P data sets X (P, N, D) (this rank's shard in distributed mode), n_init runs each.
    weights: (P, N) or None; valid: (P, N) bool mask of real rows or None. init: 'k-means++',
    'random', or centres (P * R, K, D) (R runs each). Returns the best run of every data set:
    centres (P, K, D) (in X's frame), labels (P, N), inertia (P,) float64, n_iter (P,).
    centre_in_place: X is mean-centred in place and restored before returning (scikit-learn's
    copy_x=False: no copy of X, the restored X equal up to rounding). verbose: a progress bar on
    stderr; with messages also scikit-learn's verbose lines on stdout (KMeans)."""
    P, N, _ = X.shape
    # sample weights with padding rows zeroed: what the update op and the inertia see
    W = weights
    if valid is not None:
        W = (torch.ones(P, N, dtype=X.dtype, device=X.device) if W is None else W) * valid
    mean, tol_abs = _mean_and_tolerance(X, valid, tol, comm)
    centre_in_place = centre_in_place and not spherical and valid is None
    if spherical:
        mean = torch.zeros_like(mean)
    elif centre_in_place:
        X = X.sub_(mean[:, None])
    else:
        X = X - mean[:, None]
        if valid is not None:
            X = X * valid[..., None]
    C = _initial_centres(X, K, W, init, n_init, gen, mean, spherical, comm)
    R = C.shape[0] // P
    C, n_iter = _lloyd(
        X, C, W, valid, R, max_iter, tol_abs.repeat_interleave(R), spherical, verbose, comm, desc, messages
    )
    centers, labels, inertia, pick = _best_runs(X, C, W, R, comm)
    if centre_in_place:
        X.add_(mean[:, None])
    if valid is not None:
        labels = labels.masked_fill(~valid, -1)
    return centers + mean[:, None], labels, inertia, n_iter[pick.cpu()]


def _mean_and_tolerance(X: Tensor, valid: Tensor | None, tol: float, comm: _Comm) -> tuple[Tensor, Tensor]:
    """The (unweighted) mean of every data set, (P, D) in X's dtype, and the absolute tolerance,
    (P,) float64 on the CPU. Centring on the mean gives smaller numbers, less float32
    cancellation; the tolerance is tol times the mean feature variance (scikit-learn's), i.e.
    Σ_n ‖x_n − μ‖² / (N·D). Both come from the ops: one float64 sum, one exact distance pass.
    (A NaN / inf in X makes the first op raise "X must be finite".)"""
    P, N, D = X.shape
    Wv = None if valid is None else valid.to(X.dtype)
    zeros = torch.zeros(P, N, dtype=torch.long, device=X.device)
    s1, n_rows = ops.kmeans_update(X, zeros, 1, Wv)  # (P, 1, D), (P, 1)
    s1 = comm.sum_(s1[:, 0].to(torch.float64))
    n_rows = comm.sum_(n_rows[:, 0].to(torch.float64))
    mean = (s1 / n_rows[:, None]).to(X.dtype)  # (P, D)
    if tol > 0:
        d2 = ops.kmeans_assign(X, mean[:, None])[1].to(torch.float64)  # (P, N)
        ss = comm.sum_((d2 if valid is None else d2 * valid).sum(1))
        tol_abs = (ss / (n_rows * max(D, 1)) * tol).cpu()
    else:
        tol_abs = torch.zeros(P, dtype=torch.float64)
    return mean, tol_abs


def _initial_centres(
    X: Tensor,
    K: int,
    W: Tensor | None,
    init,
    n_init,
    gen: torch.Generator,
    mean: Tensor,
    spherical: bool,
    comm: _Comm,
) -> Tensor:
    """Initial centres (P * R, K, D) in the centred frame of X (P, N, D): k-means++ or random rows
    chosen on rank 0 and broadcast (R = n_init), or the given centres (R runs each) shifted by
    the mean; normalised when spherical."""
    P, _, D = X.shape
    if isinstance(init, str):
        if comm.rank == 0:
            C = kmeans_plusplus(X, K, W, n_init, gen) if init == "k-means++" else _random_init(X, K, W, n_init, gen)
        else:
            C = torch.empty(P * n_init, K, D, dtype=X.dtype, device=X.device)
        C = comm.broadcast_(C.contiguous())
    else:
        C = init.to(X.device, X.dtype).reshape(-1, K, D)
        C = C - mean.to(X.dtype).repeat_interleave(C.shape[0] // P, 0)[:, None]
    if spherical:
        C = F.normalize(C, dim=-1)
    return C


def _lloyd(
    X: Tensor,
    C: Tensor,
    W: Tensor | None,
    valid: Tensor | None,
    R: int,
    max_iter: int,
    tol_run: Tensor,
    spherical: bool,
    verbose: bool,
    comm: _Comm,
    desc: str,
    messages: bool,
) -> tuple[Tensor, Tensor]:
    """Lloyd iterations of the P * R runs (centres C (P * R, K, D), run r of data set r // R) on
    the centred X (P, N, D) until every run converged or max_iter. Returns the final centres
    (P * R, K, D) and the iterations of each run (P * R,) int64."""
    P = X.shape[0]
    PR = P * R
    dev = X.device
    done = torch.zeros(PR, dtype=torch.bool)
    n_iter = torch.zeros(PR, dtype=torch.long)
    pad = None if valid is None else ~valid.repeat_interleave(R, 0)  # (PR, N)

    bar = None
    log = verbose and messages and comm.rank == 0
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc=desc, disable=comm.rank != 0)
    if log:
        print("Initialization complete")
    # the data sets computed: all, until at most 3/4 of them have a run still going; then a copy
    # of just those (finished ones in the set are computed and their results dropped). Copying
    # at every change of the set would move X once per finishing data set.
    act_x, Xa, Wa = torch.arange(P), X, W
    # the last iteration's runs, labels, relocation
    prev_runs, prev_labels, relocated_before = None, None, False
    for it in range(max_iter):
        if bool(done.all()):
            break
        going = torch.nonzero(~done.view(P, R).all(1)).flatten()
        set_changed = 4 * going.numel() <= 3 * act_x.numel()
        if set_changed:
            act_x = going
            Xa, Wa = X[act_x.to(dev)], None if W is None else W[act_x.to(dev)]
        runs = (act_x[:, None] * R + torch.arange(R)).flatten()  # (Pa * R,)
        everything = runs.numel() == PR and not bool(done.any())  # no indexing copies
        runs_d = runs.to(dev)
        Ca = C if everything else C[runs_d]
        va = None if valid is None else valid[act_x.to(dev)]
        labels, d2, new, shift, relocated = _lloyd_step(Xa, Ca, Wa, va, R, spherical, comm)
        lab_cmp = labels if pad is None else labels.masked_fill(pad if everything else pad[runs_d], -1)
        # scikit-learn's test: converged when the labels did not change or the shift is <= tol.
        # Labels equal to the last iteration's give bit-identical sums (the same deterministic op
        # on the same rows and shapes), hence shift = 0 <= tol: comparing them can only matter
        # where that chain breaks - after a relocation (now or in the last iteration), when the
        # set of data sets (so the op's shapes and summation ranges) changed, and across ranks.
        # Elsewhere the comparison (0.6 ms per iteration on 64 x 10k rows) is skipped. The first
        # iteration's labels always differ from "none". (log: always, to say which test held.)
        if prev_runs is not None and (log or comm.on or relocated or relocated_before or set_changed):
            old = (
                prev_labels
                if prev_runs.numel() == runs.numel()
                else prev_labels[torch.searchsorted(prev_runs, runs).to(dev)]
            )
            changed = comm.max_((lab_cmp != old).any(1).to(torch.int32)).cpu().bool()
        else:
            changed = torch.ones(runs.numel(), dtype=torch.bool)
        prev_runs, prev_labels, relocated_before = runs, lab_cmp, relocated
        if everything:
            C = new
            n_iter[:] = it + 1
            live = torch.ones(PR, dtype=torch.bool)
        else:
            live = ~done[runs]
            live_d = live.to(dev)
            C[runs_d[live_d]] = new[live_d]
            n_iter[runs[live]] = it + 1
        converged = ~changed | (shift <= tol_run[runs])
        done[runs[live & converged]] = True
        if verbose:
            inertia = _run_inertia(d2, Wa, R, comm)
            bar.set_postfix(active=int((~done).sum()), inertia=f"{float(inertia.min()):.6g}")
            bar.update(1)
            if log:
                _log_iteration(it, runs, live, changed, shift, tol_run, inertia, PR)
    if bar is not None:
        bar.close()
    return C, n_iter


def _lloyd_step(
    Xa: Tensor, Ca: Tensor, Wa: Tensor | None, va: Tensor | None, R: int, spherical: bool, comm: _Comm
) -> tuple[Tensor, Tensor, Tensor, Tensor, bool]:
    """One Lloyd iteration of the runs Ca (Pa * R, K, D) on the data sets Xa (Pa, N, D) (weights
    Wa, valid rows va or None): assignment and update in one op, sums across ranks, empty
    clusters relocated. Returns labels (Pa * R, N), dist2 (Pa * R, N), the new centres (Pa * R,
    K, D), the squared shift of every run (Pa * R,) float64 on the CPU, and whether a cluster was
    relocated."""
    labels, d2, sums, counts = ops.kmeans_step(Xa, Ca, Wa)
    sums, counts = comm.sum_(sums), comm.sum_(counts)
    empty = torch.nonzero((counts == 0).any(1)).flatten().tolist()
    if empty:
        _relocate_empty(Xa, Wa, va, labels, d2, sums, counts, empty, R, comm)
    new = torch.where(
        counts[..., None] > 0,
        sums / counts[..., None].clamp_min(torch.finfo(Xa.dtype).tiny),
        Ca,
    )
    if spherical:
        new = F.normalize(new, dim=-1)
    shift = (new - Ca).to(torch.float64).square().sum((1, 2)).cpu()
    return labels, d2, new, shift, bool(empty)


def _run_inertia(d2: Tensor, W: Tensor | None, R: int, comm: _Comm) -> Tensor:
    """Σ_n w_n d2_n of every run (float64 on the CPU), summed across ranks: d2 (P * R, N),
    W (P, N) or None."""
    return comm.sum_(
        (d2.to(torch.float64) * (1 if W is None else W.repeat_interleave(R, 0).to(torch.float64))).sum(1)
    ).cpu()


def _best_runs(X: Tensor, C: Tensor, W: Tensor | None, R: int, comm: _Comm):
    """The final E-step with the final centres C (P * R, K, D) (scikit-learn does it unless the
    labels converged strictly, in which case it changes nothing) and the best run of every data
    set (the first minimum of the exact inertia). Returns centres (P, K, D) (centred frame),
    labels (P, N), inertia (P,) float64 and the picked run of every data set (P,)."""
    P = X.shape[0]
    labels, d2 = ops.kmeans_assign(X, C)
    inertia = _run_inertia(d2, W, R, comm).view(P, R)
    best = inertia.argmin(1)  # first minimum
    pick = (torch.arange(P) * R + best).to(X.device)
    return C[pick], labels[pick], inertia[torch.arange(P), best], pick


def _log_iteration(it, runs, live, changed, shift, tol_run, inertia, n_runs) -> None:
    """scikit-learn's verbose lines for the live runs of one iteration (the run named if several)."""
    for j in torch.nonzero(live).flatten().tolist():
        run = f" (run {int(runs[j])})" if n_runs > 1 else ""
        print(f"Iteration {it}, inertia {float(inertia[j])}{run}.")
        if not changed[j]:
            print(f"Converged at iteration {it}: strict convergence{run}.")
        elif shift[j] <= tol_run[runs[j]]:
            print(
                f"Converged at iteration {it}: center shift {float(shift[j])} "
                f"within tolerance {float(tol_run[runs[j]])}{run}."
            )


def _resolve_n_init(n_init, init, who: str = "batched_kmeans") -> int:
    """The number of runs: 'auto' is 1 for k-means++ and given centres, 10 for 'random' and a
    callable init (scikit-learn's rule); given centres always make one run (with a warning)."""
    if isinstance(n_init, str):
        if n_init != "auto":
            raise ValueError(f"n_init must be 'auto' or a positive int, got {n_init!r}")
        return 1 if (isinstance(init, str) and init == "k-means++") or _is_array_init(init) else 10
    if isinstance(n_init, bool) or not isinstance(n_init, numbers.Integral) or n_init < 1:
        raise ValueError(f"n_init must be 'auto' or a positive int, got {n_init!r}")
    if _is_array_init(init) and n_init != 1:
        warnings.warn(
            f"Explicit initial center position passed: performing only one init in {who} instead of n_init={n_init}.",
            RuntimeWarning,
            stacklevel=3,
        )
        return 1
    return int(n_init)


def _is_array_init(init) -> bool:
    return not isinstance(init, str) and not callable(init)


def _check_init_shape(C0: Tensor, K: int, D: int, P: int | None = None) -> None:
    """Initial centres (K, D), or (P, K, D) when P is given: scikit-learn's sentences after ours."""
    shape = tuple(C0.shape)
    if C0.dim() == 2 and shape[0] != K:
        why = f"The shape of the initial centers {shape} does not match the number of clusters {K}."
    elif C0.dim() == 2 and shape[1] != D:
        why = f"The shape of the initial centers {shape} does not match the number of features of the data {D}."
    elif C0.dim() == 3 and (P is None or shape != (P, K, D)):
        why = f"The shape of the initial centers {shape} is not ({P}, {K}, {D})."
    else:
        return
    want = f"({K}, {D})" if P is None else f"({K}, {D}) or ({P}, {K}, {D})"
    raise ValueError(f"init must have shape (n_clusters, n_features) = {want}, got {shape}: {why}")


def _check_params(n_clusters, init, max_iter, tol, allow_callable: bool = False) -> None:
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral) or n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive int, got {n_clusters!r}")
    if (isinstance(init, str) and init not in ("k-means++", "random")) or (callable(init) and not allow_callable):
        also = ", a callable (X, n_clusters, random_state) -> centres" if allow_callable else ""
        raise ValueError(
            f"init must be 'k-means++', 'random'{also} or an array of shape (n_clusters, n_features), got {init!r}"
        )
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not isinstance(tol, numbers.Real) or not tol >= 0 or not math.isfinite(tol):
        raise ValueError(f"tol must be a finite non-negative float, got {tol!r}")


def _check_weights(sample_weight, P: int, N: int, valid, device, dtype, comm: _Comm):
    """sample_weight (N,) or (P, N), finite, non-negative, a positive sum per problem -> (P, N)
    tensor or None."""
    if sample_weight is None:
        return None
    W = _to_tensor(sample_weight, "sample_weight", device, (1, 2)).to(dtype)
    if W.shape[-1] != N or (W.dim() == 2 and W.shape[0] != P):
        want = f"({N},)" if P == 1 else f"({N},) or ({P}, {N})"
        raise ValueError(f"sample_weight must have shape {want}, got {tuple(W.shape)}")
    W = W.expand(P, N)
    _check_finite(W, "sample_weight")
    if bool((W < 0).any()):
        raise ValueError("sample_weight must be non-negative")
    Wv = W if valid is None else W * valid
    if bool((comm.sum_(Wv.sum(1)) <= 0).any()):
        where = "" if P == 1 else " over the rows of every problem"
        raise ValueError(f"sample_weight must have a positive sum{where}, got all zero weights")
    return W


def _prepare(
    X: Tensor,
    K: int,
    sample_weight,
    valid: Tensor | None,
    init,
    spherical: bool,
    comm: _Comm,
):
    """Checks shared by KMeans and batched_kmeans. X (P, N, D) -> (weights (P, N) or None, init tensor or str)."""
    P, N, D = X.shape
    if valid is not None:  # padding may hold anything: zeros from here on
        X = torch.where(valid[..., None], X, torch.zeros((), dtype=X.dtype, device=X.device))
    n_valid = valid.sum(1) if valid is not None else torch.full((P,), N)
    n_valid = comm.sum_(n_valid.to(X.device)).cpu()
    if P and int(n_valid.min()) < K:
        raise ValueError(f"n_samples={int(n_valid.min())} should be >= n_clusters={K}.")
    W = _check_weights(sample_weight, P, N, valid, X.device, X.dtype, comm)
    if spherical:
        norms = X.norm(dim=-1)
        zero = (norms == 0) if valid is None else (norms == 0) & valid
        if bool(zero.any()):
            raise ValueError("spherical=True needs non-zero rows: X has rows of norm 0")
        X = F.normalize(X, dim=-1)
    if not isinstance(init, str):
        C0 = _to_tensor(init, "init", X.device, (2, 3)).to(X.dtype)
        _check_init_shape(C0, K, D, P if P > 1 or C0.dim() == 3 else None)
        _check_finite(C0, "init")
        init = C0.expand(P, K, D)
    return X, W, init


def batched_kmeans(
    X,
    n_clusters: int,
    lengths=None,
    sample_weight=None,
    init="k-means++",
    n_init="auto",
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state=None,
    spherical: bool = False,
    device=None,
    verbose: bool = False,
    distributed: bool = False,
) -> BatchedKMeansResult:
    """P independent k-means problems in the same op calls.

    X: (P, N, D) numpy array or tensor. lengths: (P,) ints, problem p using rows [0, lengths[p])
    (the rest is padding), or a (P, N) bool mask of the rows to use, or None. sample_weight:
    (N,) or (P, N) non-negative. init: 'k-means++', 'random', or centres (K, D) / (P, K, D).
    n_init runs per problem ('auto': 1, or 10 for 'random') are extra problems of the same
    calls; the run of lowest inertia is kept. Other arguments as in ``KMeans``.
    Returns BatchedKMeansResult(centers (P, K, D), labels (P, N) with -1 on padding,
    inertia (P,) float64, n_iter (P,)).
    """
    _check_params(n_clusters, init, max_iter, tol)
    comm = _Comm(distributed)
    X = _to_tensor(X, "X", device, (3,))
    P, N, D = X.shape
    valid = None
    if lengths is not None:
        lt = _to_tensor(lengths, "lengths", None, (1, 2)).to(X.device)
        if lt.dim() == 1:
            if lt.shape[0] != P:
                raise ValueError(f"lengths must have shape ({P},), got {tuple(lt.shape)}")
            if bool(((lt < 0) | (lt > N) | (lt != lt.round())).any()):
                raise ValueError(f"lengths must be integers in [0, {N}]")
            valid = torch.arange(N, device=X.device)[None, :] < lt[:, None]
        else:
            if tuple(lt.shape) != (P, N):
                raise ValueError(f"a lengths mask must have shape ({P}, {N}), got {tuple(lt.shape)}")
            valid = lt.bool()
    n_init = _resolve_n_init(n_init, init)
    X, W, init = _prepare(X, int(n_clusters), sample_weight, valid, init, spherical, comm)
    if P == 0:
        return BatchedKMeansResult(
            X.new_empty(0, n_clusters, D),
            torch.empty(0, N, dtype=torch.long),
            torch.empty(0, dtype=torch.float64),
            torch.empty(0, dtype=torch.long),
        )
    centers, labels, inertia, n_iter = _solve(
        X,
        int(n_clusters),
        W,
        valid,
        init,
        n_init,
        int(max_iter),
        float(tol),
        _make_generator(random_state),
        spherical,
        verbose,
        comm,
        f"batched k-means (P={P})",
    )
    return BatchedKMeansResult(centers, labels, inertia, n_iter)


# ---------------------------------------------------------------------------------------------
# scipy sparse X (KMeans only)
# ---------------------------------------------------------------------------------------------
# Lloyd on a CSR matrix, on the CPU in float64, with the semantics of the dense solver (same
# k-means++ / random draws, relocation, convergence test), one run after the other: the
# assignment is a sparse-dense product (‖x‖² − 2 x·c + ‖c‖², in row chunks), the update a
# sparse reduction (a (K, N) weighted indicator matrix times X). Distances of rows to their own
# centre (relocation, inertia) are computed from the stored entries, as scikit-learn does.
def _sparse_sq_norms(Xs) -> np.ndarray:
    return np.asarray(Xs.multiply(Xs).sum(1), dtype=np.float64).ravel()


def _sparse_dist2(Xs, xx: np.ndarray, C: np.ndarray):
    """Squared distances of the rows of CSR Xs (row norms xx) to the centres C (K, D), in chunks
    of rows: yields (start, (rows, K) float64 block, clipped at 0)."""
    N, K = Xs.shape[0], C.shape[0]
    cc = np.einsum("kd,kd->k", C, C)
    step = max(1, (1 << 22) // max(1, K))
    for i in range(0, N, step):
        d2 = xx[i : i + step, None] - 2.0 * (Xs[i : i + step] @ C.T) + cc[None]
        yield i, np.maximum(d2, 0.0, out=d2)


def _sparse_assign(Xs, xx: np.ndarray, C: np.ndarray) -> np.ndarray:
    labels = np.empty(Xs.shape[0], dtype=np.int64)
    for i, d2 in _sparse_dist2(Xs, xx, C):
        labels[i : i + d2.shape[0]] = d2.argmin(1)
    return labels


def _sparse_d2_own(Xs, C: np.ndarray, labels: np.ndarray, row_of: np.ndarray) -> np.ndarray:
    """‖x_n − C[labels_n]‖² = ‖c‖² + Σ over stored j of ((x_j − c_j)² − c_j²)."""
    cj = C[labels[row_of], Xs.indices]
    per_entry = (Xs.data - cj) ** 2 - cj**2
    d2 = np.einsum("kd,kd->k", C, C)[labels] + np.bincount(row_of, per_entry, minlength=Xs.shape[0])
    return np.maximum(d2, 0.0, out=d2)


def _normalize_rows(C: np.ndarray) -> np.ndarray:
    return C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)


def _lloyd_sparse(Xs, xx, w, C, max_iter, tol_abs, spherical, log, run):
    """One Lloyd run from centres C (K, D) float64 -> (centres, labels, inertia, n_iter)."""
    N, K = Xs.shape[0], C.shape[0]
    row_of = np.repeat(np.arange(N), np.diff(Xs.indptr))
    labels_old, strict = None, False
    for it in range(max_iter):
        labels = _sparse_assign(Xs, xx, C)
        d2 = _sparse_d2_own(Xs, C, labels, row_of)
        M = sp.csr_matrix((w, (labels, np.arange(N))), shape=(K, N))
        sums = (M @ Xs).toarray()
        counts = np.bincount(labels, weights=w, minlength=K)
        empty = np.flatnonzero(counts == 0)
        if empty.size:  # as _relocate_empty: the farthest points, none at distance 0
            order = np.argsort(-d2, kind="stable")[: empty.size]
            for new_k, i in zip(empty, order, strict=False):
                if not d2[i] > 0:
                    break
                xw = Xs[i].toarray()[0] * w[i]
                sums[labels[i]] -= xw
                sums[new_k] = xw
                counts[labels[i]] -= w[i]
                counts[new_k] = w[i]
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1e-300)[:, None], C)
        if spherical:
            new = _normalize_rows(new)
        shift = float(((new - C) ** 2).sum())
        C = new
        if log:
            print(f"Iteration {it}, inertia {float(w @ d2)}{run}.")
        if labels_old is not None and np.array_equal(labels, labels_old):
            strict = True
            if log:
                print(f"Converged at iteration {it}: strict convergence{run}.")
            break
        if shift <= tol_abs:
            if log:
                print(f"Converged at iteration {it}: center shift {shift} within tolerance {tol_abs}{run}.")
            break
        labels_old = labels
    if not strict:
        labels = _sparse_assign(Xs, xx, C)
    inertia = float(w @ _sparse_d2_own(Xs, C, labels, row_of))
    return C, labels, inertia, it + 1


def _solve_sparse(Xs, K, W, init, n_init, max_iter, tol, gen, spherical, verbose):
    """k-means of a CSR matrix: the best of n_init runs -> (centres (K, D) float64, labels (N,),
    inertia, n_iter). W: (1, N) tensor or None; init: 'k-means++', 'random' or (R, K, D)."""
    N, D = Xs.shape
    X64 = Xs.astype(np.float64)
    if spherical:
        from sklearn.preprocessing import normalize

        X64 = normalize(X64)
    xx = _sparse_sq_norms(X64)
    w = np.ones(N) if W is None else W[0].to("cpu", torch.float64).numpy()
    tol_abs = float(mean_variance_axis(X64, axis=0)[1].mean() * tol) if tol > 0 else 0.0
    if isinstance(init, str):
        Wt = None if W is None else W.to("cpu", torch.float64)
        if init == "k-means++":

            def rows(d, r):
                return torch.from_numpy(X64[r.reshape(-1).numpy()].toarray()).view(*r.shape, D)

            def dist(pts):
                P_ = pts.reshape(-1, D).numpy()
                d2 = np.empty((P_.shape[0], N))
                for i, blk in _sparse_dist2(X64, xx, P_):
                    d2[:, i : i + blk.shape[0]] = blk.T
                return torch.from_numpy(d2)

            C0 = _greedy_kmeans_pp(rows, dist, (1, N, D), torch.float64, "cpu", K, Wt, n_init, gen, None).numpy()
        else:
            idx = _random_rows(1, N, K, Wt, n_init, gen)
            C0 = X64[idx.reshape(-1).numpy()].toarray().reshape(-1, K, D)
    else:
        C0 = init.to("cpu", torch.float64).reshape(-1, K, D).numpy()
    if spherical:
        C0 = _normalize_rows(C0.reshape(-1, D)).reshape(-1, K, D)
    if verbose:
        print("Initialization complete")
    best = None
    for r in range(C0.shape[0]):
        run = f" (run {r})" if C0.shape[0] > 1 else ""
        res = _lloyd_sparse(X64, xx, w, C0[r].copy(), max_iter, tol_abs, spherical, verbose, run)
        if best is None or res[2] < best[2]:
            best = res
    return best


# ---------------------------------------------------------------------------------------------
# the scikit-learn estimator
# ---------------------------------------------------------------------------------------------
class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """k-means clustering with scikit-learn's estimator contract and Lloyd semantics, on the
    tlkernels ops.

    Parameters as in ``sklearn.cluster.KMeans``: n_clusters; init = 'k-means++' | 'random' |
    array (K, D) | callable ``init(X, n_clusters, random_state) -> (K, D)`` (called with X as
    given, unscaled and uncentred, and a numpy RandomState; its centres are in X's frame);
    n_init = 'auto' | int ('auto': 1 for k-means++ and given centres, 10 otherwise); max_iter;
    tol (relative to the mean feature variance); verbose (scikit-learn's messages on stdout and
    a tqdm progress bar on stderr); random_state; copy_x (False: dense numpy X is mean-centred in
    place and restored before fit returns, equal up to rounding; no copy of X is made);
    algorithm = 'lloyd' | 'elkan' (**'elkan' runs Lloyd**: same results, no triangle-inequality
    bounds). Plus ``spherical`` (cosine k-means: rows and centres on the unit sphere),
    ``device`` (where to compute; default: X's device) and ``distributed`` (every rank of an
    initialised torch.distributed group holds a shard of X; sums, counts and inertia are
    all-reduced, the initial centres chosen on rank 0; labels_ are this rank's).

    X may be a numpy array / array-like / DataFrame (checked by scikit-learn's
    ``validate_data``: integers become float64, float32 stays float32), a torch tensor, or a
    scipy sparse CSR / CSC matrix. Sparse X is clustered on the CPU in float64 without being
    densified (assignment by a sparse-dense product, update by a sparse reduction; not with
    ``distributed=True``); its results equal the dense ones up to rounding.

    After fit: cluster_centers_ (K, D) in X's float dtype, labels_ (N,), inertia_ (float),
    n_iter_ (int), n_features_in_, feature_names_in_ (DataFrame X). Arrays are numpy when X was
    not a tensor (labels int32, as scikit-learn's), tensors (labels int64) when X was a tensor.
    predict / transform / score accept any of the input kinds, whatever fit saw. Methods called
    before fit raise ``NotFittedError`` (also a RuntimeError); fewer distinct clusters than
    n_clusters warns with ``ConvergenceWarning`` (also a RuntimeWarning), and a run stops as
    soon as its centres stop moving, as scikit-learn's does.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init="k-means++",
        n_init="auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        verbose=0,
        random_state=None,
        copy_x: bool = True,
        algorithm: str = "lloyd",
        spherical: bool = False,
        device=None,
        distributed: bool = False,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.spherical = spherical
        self.device = device
        self.distributed = distributed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    @property
    def _n_features_out(self) -> int:
        return self.cluster_centers_.shape[0]

    # -- helpers ---------------------------------------------------------------------------
    def _out(self, t, kind: str):
        if kind == "tensor":
            return t
        a = t.cpu().numpy() if isinstance(t, Tensor) else t
        return a.astype(np.int32) if a.dtype == np.int64 else a

    def _validate(self, X, reset: bool):
        """X -> (tensor on the compute device, 'tensor' | 'numpy') or (CSR matrix, 'sparse'),
        n_features_in_ set (reset) or compared with fit's."""
        dev = self.device
        if dev is None and not reset:
            dev = self._centers.device
        if isinstance(X, Tensor):
            t, kind = _to_tensor(X, "X", dev, (2,)), "tensor"
            if 0 in t.shape:
                raise ValueError(f"X must have at least 1 sample and 1 feature, got shape {tuple(t.shape)}")
            check_n_features(self, t, reset=reset)
            return t, kind
        A = check_X(self, X, reset=reset)
        if sp.issparse(A):
            return A, "sparse"
        return _to_tensor(A, "X", dev, (2,)), "numpy"

    def _check_own_params(self) -> None:
        _check_params(self.n_clusters, self.init, self.max_iter, self.tol, allow_callable=True)
        if self.algorithm not in ("lloyd", "elkan"):
            raise ValueError(f"algorithm must be 'lloyd' or 'elkan', got {self.algorithm!r}")
        if not isinstance(self.copy_x, (bool, np.bool_)):
            raise TypeError(f"copy_x must be a bool, got {self.copy_x!r}")

    def _call_init(self, X, K: int, D: int, gen: torch.Generator, device) -> Tensor:
        """The callable init, once per run -> (n_init, K, D) float64 tensor."""
        if isinstance(self.random_state, torch.Generator):
            rs = np.random.RandomState(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        else:
            rs = check_random_state(self.random_state)
        out = []
        for _ in range(self._n_init):
            C0 = _to_tensor(self.init(X, K, random_state=rs), "init", device, (2,))
            _check_init_shape(C0, K, D)
            _check_finite(C0, "init")
            out.append(C0.to(torch.float64))
        return torch.stack(out)

    def _for_predict(self, X):
        check_fitted(self)
        A, kind = self._validate(X, reset=False)
        if kind == "sparse":
            if self.spherical:
                from sklearn.preprocessing import normalize

                A = normalize(A)
            return A.astype(np.float64), kind
        _check_finite(A, "X")
        t = A.to(self._centers.device, self._centers.dtype)
        if self.spherical:
            t = F.normalize(t, dim=-1)
        return t, kind

    def _centers64(self) -> np.ndarray:
        return self._centers.detach().to("cpu", torch.float64).numpy()

    # -- scikit-learn API ------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None) -> KMeans:
        """Computes the clustering. X: (N, D) array-like, tensor or scipy sparse matrix;
        sample_weight: (N,) non-negative or None."""
        self._check_own_params()
        comm = _Comm(self.distributed)
        K = int(self.n_clusters)
        A, kind = self._validate(X, reset=True)
        N, D = A.shape
        if self.algorithm == "elkan" and K == 1:
            warnings.warn(
                "algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
                RuntimeWarning,
                stacklevel=2,
            )
        self._n_init = _resolve_n_init(self.n_init, self.init, "KMeans")
        gen = _make_generator(self.random_state)
        init = self.init
        if callable(init):
            init = self._call_init(X if kind == "tensor" else A, K, D, gen, None)
        if kind == "sparse":
            if comm.on:
                raise ValueError("X must be dense with distributed=True, got a scipy sparse matrix")
            if N < K:
                raise ValueError(f"n_samples={N} should be >= n_clusters={K}.")
            W = _check_weights(sample_weight, 1, N, None, "cpu", torch.float64, comm)
            if _is_array_init(self.init):
                C0 = _to_tensor(init, "init", None, (2,))
                _check_init_shape(C0, K, D)
                _check_finite(C0, "init")
                init = C0[None]
            C, labels, inertia, n_iter = _solve_sparse(
                A, K, W, init, self._n_init, int(self.max_iter), float(self.tol), gen,
                self.spherical, bool(self.verbose),
            )  # fmt: skip
            centers = torch.from_numpy(C.astype(A.dtype))
            self._centers = centers.to(self.device) if self.device is not None else centers
            labels = torch.from_numpy(labels)
        else:
            X3, W, init_t = _prepare(
                A[None], K, sample_weight, None, "k-means++" if callable(self.init) else init,
                self.spherical, comm,
            )  # fmt: skip
            # copy_x=False: centred in place only when A is the caller's own writable array
            in_place = (
                not self.copy_x
                and isinstance(X, np.ndarray)
                and X.flags.writeable
                and A.data_ptr() == X.__array_interface__["data"][0]
            )
            centers, labels, inertia, n_iter = _solve(
                X3, K, W, None, init if callable(self.init) else init_t, self._n_init,
                int(self.max_iter), float(self.tol), gen, self.spherical, bool(self.verbose),
                comm, "k-means", centre_in_place=in_place, messages=True,
            )  # fmt: skip
            self._centers, labels = centers[0], labels[0]
            inertia, n_iter = inertia[0], n_iter[0]
        per_cluster = comm.sum_(torch.bincount(labels.to(self._centers.device), minlength=K))
        distinct = int((per_cluster > 0).sum())
        if distinct < K:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                f"({K}). Possibly due to duplicate points in X.",
                DistinctClustersWarning,
                stacklevel=2,
            )
        self.cluster_centers_ = self._out(self._centers, kind)
        self.labels_ = self._out(labels, kind)
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """fit, then labels_."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def predict(self, X):
        """Index of the closest centre of every row. X: (N, D) -> (N,) (int32 numpy, int64
        tensor)."""
        t, kind = self._for_predict(X)
        if kind == "sparse":
            return self._out(_sparse_assign(t, _sparse_sq_norms(t), self._centers64()), kind)
        return self._out(ops.kmeans_assign(t, self._centers)[0], kind)

    def transform(self, X):
        """Euclidean distances to every centre. X: (N, D) -> (N, K), computed from exact
        differences in row chunks (sparse X: from the sparse-dense product)."""
        t, kind = self._for_predict(X)
        K, D = self._centers.shape
        if kind == "sparse":
            out = np.empty((t.shape[0], K))
            for i, d2 in _sparse_dist2(t, _sparse_sq_norms(t), self._centers64()):
                out[i : i + d2.shape[0]] = np.sqrt(d2)
            return out.astype(self.cluster_centers_.dtype, copy=False)
        rows = max(1, (1 << 22) // max(1, K * D))
        out = (
            torch.cat(
                [
                    (t[i : i + rows, None, :] - self._centers[None]).square().sum(-1).sqrt()
                    for i in range(0, t.shape[0], rows)
                ]
            )
            if t.shape[0]
            else t.new_empty(0, K)
        )
        return self._out(out, kind)

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None) -> float:
        """Opposite of the inertia of X on the fitted centres."""
        t, kind = self._for_predict(X)
        if kind == "sparse":
            C = self._centers64()
            labels = _sparse_assign(t, _sparse_sq_norms(t), C)
            row_of = np.repeat(np.arange(t.shape[0]), np.diff(t.indptr))
            d2 = torch.from_numpy(_sparse_d2_own(t, C, labels, row_of))
        else:
            d2 = ops.kmeans_assign(t, self._centers)[1].to(torch.float64)
        W = _check_weights(sample_weight, 1, t.shape[0], None, d2.device, torch.float64, _Comm(False))
        return -float((d2 if W is None else d2 * W[0]).sum())
