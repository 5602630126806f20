"""k-means on the tlkernels assignment / update ops (DESIGN.md §3.3).

``KMeans`` follows scikit-learn's Lloyd semantics (mean-centred data, tol relative to the mean
feature variance, strict-or-shift convergence test, empty clusters relocated to the points
farthest from their centres, greedy k-means++ with 2 + ln K local trials) and adds a cosine mode
(``spherical=True``), a device, and a distributed mode. ``batched_kmeans`` solves P independent
problems at once; the ``n_init`` runs of every problem are extra problems of the same batched op
calls (the data is read once per iteration for all runs).

Problem numbering: with P data sets and R = n_init runs, problem ``p * R + r`` is run r of data
set p, which is what the ops expect (problem q reads X[q // R]).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops

__all__ = ["BatchedKMeansResult", "KMeans", "batched_kmeans", "kmeans_plusplus"]


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------
def _to_tensor(X, name: str, device, dims: tuple[int, ...]) -> Tensor:
    """numpy / torch / nested lists -> a float32 or float64 tensor on `device` (integers become
    float64 and float16 / bfloat16 float32, as scikit-learn does), with its dimension checked."""
    if not isinstance(X, Tensor):
        arr = np.asarray(X)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == bool
        ):
            raise ValueError(
                f"{name} must hold numbers, got an array of dtype {arr.dtype}"
            )
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
                raise RuntimeError(
                    "distributed=True needs an initialised torch.distributed process group"
                )
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
    K, R = int(n_clusters), P * n_init
    L = n_local_trials if n_local_trials is not None else 2 + int(math.log(K))
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    dev = X.device
    w = (
        torch.ones(P, N, dtype=torch.float64)
        if weights is None
        else weights.detach().to("cpu", torch.float64)
    )
    w = w.repeat_interleave(n_init, 0)  # (R, N)
    data_of = torch.arange(R) // n_init  # (R,)
    ar = torch.arange(R)
    centers = torch.empty(R, K, D, dtype=X.dtype, device=dev)
    first = torch.multinomial(w, 1, generator=gen)[:, 0]  # (R,)
    centers[:, 0] = X[data_of.to(dev), first.to(dev)]
    closest = ops.kmeans_assign(X, centers[:, :1])[1].to("cpu", torch.float64)  # (R, N)
    # unweighted: the products with w = 1 are skipped (exact either way); the (R, L, N) float64
    # block is updated in place (it is the largest temporary)
    weigh = (lambda t, w: t) if weights is None else (lambda t, w: t * w)
    pot = weigh(closest, w).sum(1)
    for c in range(1, K):
        rand = torch.rand(R, L, generator=gen, dtype=torch.float64) * pot[:, None]
        cum = torch.cumsum(weigh(closest, w), 1)
        cand = torch.searchsorted(cum, rand).clamp_(max=N - 1)  # (R, L)
        cand_pts = X[data_of[:, None].to(dev), cand.to(dev)]  # (R, L, D)
        dc = ops.kmeans_assign(X, cand_pts.reshape(R * L, 1, D))[1]  # (R * L, N)
        dc = dc.view(R, L, N).to("cpu", torch.float64)
        torch.minimum(dc, closest[:, None], out=dc)
        pots = weigh(dc, w[:, None]).sum(-1)  # (R, L)
        best = pots.argmin(1)
        closest, pot = dc[ar, best], pots[ar, best]
        centers[:, c] = cand_pts[ar.to(dev), best.to(dev)]
    return centers


def _random_init(
    X: Tensor, K: int, weights: Tensor | None, n_init: int, gen: torch.Generator
) -> Tensor:
    """K distinct rows per run, drawn with probability ∝ weight. X (P, N, D) -> (P * n_init, K, D)."""
    P, N, _ = X.shape
    w = (
        torch.ones(P, N, dtype=torch.float64)
        if weights is None
        else weights.detach().to("cpu", torch.float64)
    )
    w = w.repeat_interleave(n_init, 0)
    idx = torch.multinomial(w, K, replacement=False, generator=gen)  # (R, K)
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
        cand_d = torch.full(
            (n_empty,), -math.inf, dtype=torch.float64, device=dist.device
        )
        cand_x = torch.zeros(n_empty, Xd.shape[-1], dtype=Xd.dtype, device=Xd.device)
        cand_w = torch.zeros(n_empty, dtype=Xd.dtype, device=Xd.device)
        cand_l = torch.zeros(n_empty, dtype=torch.long, device=Xd.device)
        cand_d[:m] = dist[order]
        cand_x[:m] = Xd[x_of, order]
        cand_w[:m] = 1 if W is None else W[x_of, order]
        cand_l[:m] = labels[p, order]
        if comm.on:
            cand_d, cand_x, cand_w, cand_l = (
                comm.gather(t) for t in (cand_d, cand_x, cand_w, cand_l)
            )
            pick = torch.sort(cand_d, descending=True, stable=True).indices[:n_empty]
            cand_d, cand_x, cand_w, cand_l = (
                cand_d[pick],
                cand_x[pick],
                cand_w[pick],
                cand_l[pick],
            )
        for j in range(n_empty):
            if cand_d[j] == -math.inf:
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
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Lloyd for P data sets X (P, N, D) (this rank's shard in distributed mode), n_init runs each.
    weights: (P, N) or None; valid: (P, N) bool mask of real rows or None. Returns the best run of
    every data set: centres (P, K, D) (in X's frame), labels (P, N), inertia (P,) float64,
    n_iter (P,)."""
    P, N, D = X.shape
    dtype, dev = X.dtype, X.device
    # sample weights with padding rows zeroed: what the update op and the inertia see
    W = weights
    if valid is not None:
        W = (torch.ones(P, N, dtype=dtype, device=dev) if W is None else W) * valid
    # centre every data set on its (unweighted) mean: smaller numbers, less float32 cancellation;
    # the tolerance is tol times the mean feature variance (scikit-learn's), i.e.
    # Σ_n ‖x_n − μ‖² / (N·D). Both come from the ops: one float64 sum, one exact distance pass.
    # (A NaN / inf in X makes the first op raise "X must be finite".)
    Wv = None if valid is None else valid.to(dtype)
    zeros = torch.zeros(P, N, dtype=torch.long, device=dev)
    s1, n_rows = ops.kmeans_update(X, zeros, 1, Wv)  # (P, 1, D), (P, 1)
    s1 = comm.sum_(s1[:, 0].to(torch.float64))
    n_rows = comm.sum_(n_rows[:, 0].to(torch.float64))
    mean = (s1 / n_rows[:, None]).to(dtype)  # (P, D)
    if tol > 0:
        d2 = ops.kmeans_assign(X, mean[:, None])[1].to(torch.float64)  # (P, N)
        ss = comm.sum_((d2 if valid is None else d2 * valid).sum(1))
        tol_abs = (ss / (n_rows * max(D, 1)) * tol).cpu()
    else:
        tol_abs = torch.zeros(P, dtype=torch.float64)
    n_rows = n_rows.cpu()
    if spherical:
        mean = torch.zeros_like(mean)
    else:
        X = X - mean[:, None]
        if valid is not None:
            X = X * valid[..., None]

    # initial centres (P * R, K, D), chosen on rank 0 and broadcast
    if isinstance(init, str):
        if comm.rank == 0:
            sampling_w = W
            C = (
                kmeans_plusplus(X, K, sampling_w, n_init, gen)
                if init == "k-means++"
                else _random_init(X, K, sampling_w, n_init, gen)
            )
        else:
            C = torch.empty(P * n_init, K, D, dtype=dtype, device=dev)
        C = comm.broadcast_(C.contiguous())
    else:
        C = init.to(dev, dtype).reshape(P, K, D) - mean.to(dtype)[:, None]
    if spherical:
        C = F.normalize(C, dim=-1)
    R = C.shape[0] // P
    PR = P * R
    tol_run = tol_abs.repeat_interleave(R)

    done = torch.zeros(PR, dtype=torch.bool)
    n_iter = torch.zeros(PR, dtype=torch.long)
    pad = None if valid is None else ~valid.repeat_interleave(R, 0)  # (PR, N)

    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc=desc, disable=comm.rank != 0)
    # the data sets computed: all, until at most 3/4 of them have a run still going; then a copy
    # of just those (finished ones in the set are computed and their results dropped). Copying
    # at every change of the set would move X once per finishing data set.
    act_x, Xa, Wa = torch.arange(P), X, W
    prev_runs, prev_labels, relocated_before = (
        None,
        None,
        False,
    )  # the last iteration's runs, labels
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
        labels, d2, sums, counts = ops.kmeans_step(Xa, Ca, Wa)
        sums, counts = comm.sum_(sums), comm.sum_(counts)
        empty = torch.nonzero((counts == 0).any(1)).flatten().tolist()
        relocated = bool(empty)
        if empty:
            _relocate_empty(
                Xa,
                Wa,
                None if valid is None else valid[act_x.to(dev)],
                labels,
                d2,
                sums,
                counts,
                empty,
                R,
                comm,
            )
        new = torch.where(
            counts[..., None] > 0,
            sums / counts[..., None].clamp_min(torch.finfo(dtype).tiny),
            sums,
        )
        if spherical:
            new = F.normalize(new, dim=-1)
        shift = (new - Ca).to(torch.float64).square().sum((1, 2)).cpu()
        lab_cmp = (
            labels
            if pad is None
            else labels.masked_fill(pad if everything else pad[runs_d], -1)
        )
        # scikit-learn's test: converged when the labels did not change or the shift is <= tol.
        # Labels equal to the last iteration's give bit-identical sums (the same deterministic op
        # on the same rows and shapes), hence shift = 0 <= tol: comparing them can only matter
        # where that chain breaks - after a relocation (now or in the last iteration), when the
        # set of data sets (so the op's shapes and summation ranges) changed, and across ranks.
        # Elsewhere the comparison (0.6 ms per iteration on 64 x 10k rows) is skipped. The first
        # iteration's labels always differ from "none".
        if prev_runs is not None and (
            comm.on or relocated or relocated_before or set_changed
        ):
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
        if bar is not None:
            inertia = comm.sum_(
                (
                    d2.to(torch.float64)
                    * (
                        1
                        if Wa is None
                        else Wa.repeat_interleave(R, 0).to(torch.float64)
                    )
                ).sum(1)
            ).cpu()
            bar.set_postfix(
                active=int((~done).sum()), inertia=f"{float(inertia.min()):.6g}"
            )
            bar.update(1)
    if bar is not None:
        bar.close()

    # final E-step with the final centres (scikit-learn does it unless the labels converged
    # strictly, in which case it changes nothing): labels and exact inertia
    labels, d2 = ops.kmeans_assign(X, C)
    wr = None if W is None else W.repeat_interleave(R, 0).to(torch.float64)
    inertia = (
        comm.sum_((d2.to(torch.float64) * (1 if wr is None else wr)).sum(1))
        .cpu()
        .view(P, R)
    )
    best = inertia.argmin(1)  # first minimum
    pick = (torch.arange(P) * R + best).to(dev)
    centers = C[pick] + mean[:, None]
    labels = labels[pick]
    if valid is not None:
        labels = labels.masked_fill(~valid, -1)
    return centers, labels, inertia[torch.arange(P), best], n_iter[pick.cpu()]


def _resolve_n_init(n_init, init) -> int:
    if isinstance(n_init, str):
        if n_init != "auto":
            raise ValueError(f"n_init must be 'auto' or a positive int, got {n_init!r}")
        return 10 if isinstance(init, str) and init == "random" else 1
    if (
        isinstance(n_init, bool)
        or not isinstance(n_init, numbers.Integral)
        or n_init < 1
    ):
        raise ValueError(f"n_init must be 'auto' or a positive int, got {n_init!r}")
    if not isinstance(init, str) and n_init != 1:
        warnings.warn(
            f"Explicit initial center position passed: performing only one init instead of n_init={n_init}",
            RuntimeWarning,
            stacklevel=3,
        )
        return 1
    return int(n_init)


def _check_params(n_clusters, init, max_iter, tol) -> None:
    if (
        isinstance(n_clusters, bool)
        or not isinstance(n_clusters, numbers.Integral)
        or n_clusters < 1
    ):
        raise ValueError(f"n_clusters must be a positive int, got {n_clusters!r}")
    if isinstance(init, str) and init not in ("k-means++", "random"):
        raise ValueError(
            f"init must be 'k-means++', 'random' or an array of shape (n_clusters, n_features), got {init!r}"
        )
    if (
        isinstance(max_iter, bool)
        or not isinstance(max_iter, numbers.Integral)
        or max_iter < 1
    ):
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not isinstance(tol, numbers.Real) or not tol >= 0 or not math.isfinite(tol):
        raise ValueError(f"tol must be a finite non-negative float, got {tol!r}")


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
        X = torch.where(
            valid[..., None], X, torch.zeros((), dtype=X.dtype, device=X.device)
        )
    n_valid = valid.sum(1) if valid is not None else torch.full((P,), N)
    n_valid = comm.sum_(n_valid.to(X.device)).cpu()
    if P and int(n_valid.min()) < K:
        raise ValueError(f"n_samples={int(n_valid.min())} should be >= n_clusters={K}.")
    W = None
    if sample_weight is not None:
        W = _to_tensor(sample_weight, "sample_weight", X.device, (1, 2)).to(X.dtype)
        if W.shape[-1] != N or (W.dim() == 2 and W.shape[0] != P):
            raise ValueError(
                f"sample_weight must have shape ({N},) or ({P}, {N}), got {tuple(W.shape)}"
            )
        W = W.expand(P, N)
        _check_finite(W, "sample_weight")
        if bool((W < 0).any()):
            raise ValueError("sample_weight must be non-negative")
        Wv = W if valid is None else W * valid
        if bool((comm.sum_(Wv.sum(1)) <= 0).any()):
            raise ValueError(
                "sample_weight must have a positive sum (over the rows of every problem)"
            )
    if spherical:
        norms = X.norm(dim=-1)
        zero = (norms == 0) if valid is None else (norms == 0) & valid
        if bool(zero.any()):
            raise ValueError("spherical=True needs non-zero rows: X has rows of norm 0")
        X = F.normalize(X, dim=-1)
    if not isinstance(init, str):
        C0 = _to_tensor(init, "init", X.device, (2, 3)).to(X.dtype)
        if C0.shape[-2:] != (K, D) or (C0.dim() == 3 and C0.shape[0] != P):
            raise ValueError(
                f"init must have shape (n_clusters, n_features) = ({K}, {D}) or ({P}, {K}, {D}), "
                f"got {tuple(C0.shape)}"
            )
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
                raise ValueError(
                    f"lengths must have shape ({P},), got {tuple(lt.shape)}"
                )
            if bool(((lt < 0) | (lt > N) | (lt != lt.round())).any()):
                raise ValueError(f"lengths must be integers in [0, {N}]")
            valid = torch.arange(N, device=X.device)[None, :] < lt[:, None]
        else:
            if tuple(lt.shape) != (P, N):
                raise ValueError(
                    f"a lengths mask must have shape ({P}, {N}), got {tuple(lt.shape)}"
                )
            valid = lt.bool()
    n_init = _resolve_n_init(n_init, init)
    X, W, init = _prepare(
        X, int(n_clusters), sample_weight, valid, init, spherical, comm
    )
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
# the scikit-learn estimator
# ---------------------------------------------------------------------------------------------
try:  # get_params / set_params / clone compatibility when scikit-learn is importable
    from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin

    _Bases: tuple = (ClusterMixin, TransformerMixin, BaseEstimator)
except ImportError:  # pragma: no cover
    _Bases = (object,)


class KMeans(*_Bases):
    """k-means clustering with scikit-learn's interface and Lloyd semantics, on the tlkernels ops.

    Parameters as in ``sklearn.cluster.KMeans`` (n_clusters, init = 'k-means++' | 'random' |
    array (K, D), n_init = 'auto' | int, max_iter, tol relative to the mean feature variance,
    random_state) plus ``spherical`` (cosine k-means: rows and centres on the unit sphere),
    ``device`` (where to compute; default: X's device), ``verbose`` (a tqdm progress bar) and
    ``distributed`` (every rank of an initialised torch.distributed group holds a shard of X;
    sums, counts and inertia are all-reduced, the initial centres chosen on rank 0; labels_ are
    this rank's).

    After fit: cluster_centers_ (K, D), labels_ (N,), inertia_ (float), n_iter_ (int),
    n_features_in_. Arrays are numpy when X was numpy, tensors when X was a tensor.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init="k-means++",
        n_init="auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state=None,
        spherical: bool = False,
        device=None,
        verbose: bool = False,
        distributed: bool = False,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.spherical = spherical
        self.device = device
        self.verbose = verbose
        self.distributed = distributed

    # -- helpers ---------------------------------------------------------------------------
    def _out(self, t: Tensor, like_numpy: bool):
        return t.cpu().numpy() if like_numpy else t

    def _input(self, X) -> tuple[Tensor, bool]:
        dev = self.device
        if dev is None and hasattr(self, "_centers"):
            dev = self._centers.device
        t = _to_tensor(X, "X", dev, (2,))
        return t, not isinstance(X, Tensor)

    def _check_fitted(self) -> None:
        if not hasattr(self, "_centers"):
            raise RuntimeError("this KMeans instance is not fitted yet: call fit first")

    def _for_predict(self, X) -> tuple[Tensor, bool]:
        self._check_fitted()
        t, is_np = self._input(X)
        if t.shape[1] != self._centers.shape[1]:
            raise ValueError(
                f"X has {t.shape[1]} features, but KMeans was fitted with {self._centers.shape[1]}"
            )
        _check_finite(t, "X")
        t = t.to(self._centers.device, self._centers.dtype)
        if self.spherical:
            t = F.normalize(t, dim=-1)
        return t, is_np

    # -- scikit-learn API ------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None) -> KMeans:
        """Computes the clustering. X: (N, D); sample_weight: (N,) non-negative or None."""
        _check_params(self.n_clusters, self.init, self.max_iter, self.tol)
        comm = _Comm(self.distributed)
        t, is_np = self._input(X)
        n_init = _resolve_n_init(self.n_init, self.init)
        X3, W, init = _prepare(
            t[None],
            int(self.n_clusters),
            sample_weight,
            None,
            self.init,
            self.spherical,
            comm,
        )
        centers, labels, inertia, n_iter = _solve(
            X3,
            int(self.n_clusters),
            W,
            None,
            init,
            n_init,
            int(self.max_iter),
            float(self.tol),
            _make_generator(self.random_state),
            self.spherical,
            self.verbose,
            comm,
            "k-means",
        )
        self._centers = centers[0]
        per_cluster = comm.sum_(
            torch.bincount(labels[0], minlength=int(self.n_clusters))
        )
        distinct = int((per_cluster > 0).sum())
        if distinct < self.n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                f"({self.n_clusters}). Possibly due to duplicate points in X.",
                RuntimeWarning,
                stacklevel=2,
            )
        self.cluster_centers_ = self._out(centers[0], is_np)
        self.labels_ = self._out(labels[0], is_np)
        self.inertia_ = float(inertia[0])
        self.n_iter_ = int(n_iter[0])
        self.n_features_in_ = int(t.shape[1])
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """fit, then labels_."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def predict(self, X, sample_weight=None):
        """Index of the closest centre of every row. X: (N, D) -> (N,) int64."""
        t, is_np = self._for_predict(X)
        return self._out(ops.kmeans_assign(t, self._centers)[0], is_np)

    def transform(self, X):
        """Euclidean distances to every centre. X: (N, D) -> (N, K), computed from exact
        differences in row chunks."""
        t, is_np = self._for_predict(X)
        K, D = self._centers.shape
        rows = max(1, (1 << 22) // max(1, K * D))
        out = (
            torch.cat(
                [
                    (t[i : i + rows, None, :] - self._centers[None])
                    .square()
                    .sum(-1)
                    .sqrt()
                    for i in range(0, t.shape[0], rows)
                ]
            )
            if t.shape[0]
            else t.new_empty(0, K)
        )
        return self._out(out, is_np)

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None) -> float:
        """Opposite of the inertia of X on the fitted centres."""
        t, _ = self._for_predict(X)
        d2 = ops.kmeans_assign(t, self._centers)[1].to(torch.float64)
        if sample_weight is not None:
            w = _to_tensor(sample_weight, "sample_weight", t.device, (1,)).to(
                torch.float64
            )
            if w.shape[0] != t.shape[0]:
                raise ValueError(
                    f"sample_weight must have shape ({t.shape[0]},), got {tuple(w.shape)}"
                )
            d2 = d2 * w
        return -float(d2.sum())
