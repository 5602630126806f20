"""Gradient-similarity data selection, as in LESS (Xia et al., 2024).

A source example's score is the cosine between its (optionally Adam-preconditioned) gradient
and the target examples' gradients, averaged over the target examples and summed over
checkpoints with their learning rates:

    score_i = Σ_t η_t mean_z cos(P D_t ∇l_i(θ_t), P ∇l_z(θ_t)),

with D_t the diagonal Adam preconditioner 1 / (sqrt(v̂_t) + ε) of the optimizer state at
checkpoint t (or none) and P a random projection to dimension d (or none). The budget's best
scores are selected.

LESS preconditions with the Adam update a single gradient would cause, (β1 m + (1-β1) g) /
(sqrt(β2 v + (1-β2) g²) + ε), which is not linear in g; here D_t is the optimizer's second moment
alone (the update direction of g given Adam's current scale), which keeps the score linear in the
per-sample gradient, so that P D_t ∇l_i is ``grad_dot`` against the d vectors D_t p_k: the
projection never forms per-sample gradients. Without a projection the cosines are exact, from the
per-layer Grams (materialised per-sample gradients only when preconditioned).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import persample
from ._grads import LossFn, check_lrs, loaded, trainable

__all__ = ["adam_preconditioner", "gradient_similarity", "project", "select_budget"]


def adam_preconditioner(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Tensor]:
    """{name: 1 / (sqrt(v̂) + ε)} from an Adam / AdamW optimizer's state (v̂ the bias-corrected second
    moment). Parameters without state yet get 1 (no preconditioning)."""
    by_id = {}
    for group in optimizer.param_groups:
        if "betas" not in group or "eps" not in group:
            raise ValueError("adam_preconditioner needs an Adam-type optimizer (param_groups with 'betas' and 'eps')")
        for p in group["params"]:
            by_id[id(p)] = group
    out = {}
    for n, p in trainable(model).items():
        state = optimizer.state.get(p, {})
        if id(p) not in by_id or "exp_avg_sq" not in state:
            out[n] = torch.ones_like(p)
            continue
        group = by_id[id(p)]
        step = float(state["step"])
        v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** step)
        out[n] = 1.0 / (v_hat.sqrt() + group["eps"])
    return out


def _directions(params: Mapping[str, Tensor], start: int, stop: int, seed: int, dim: int) -> list[dict[str, Tensor]]:
    """Rows start..stop-1 of the Rademacher projection (±1/sqrt(dim)) as maps of vectors; row k is
    drawn from its own generator (seed, k), so any chunking gives the same matrix."""
    rows = []
    for k in range(start, stop):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + k)
        row = {}
        for n, p in params.items():
            r = torch.randint(0, 2, p.shape, generator=gen, dtype=torch.int8)
            row[n] = (r.to(p.dtype) * 2 - 1).mul_(1 / math.sqrt(dim)).to(p.device)
        rows.append(row)
    return rows


def project(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    dim: int,
    *,
    seed: int = 0,
    preconditioner: Mapping[str, Tensor] | None = None,
    chunk: int = 64,
    **persample_options,
) -> Tensor:
    """(B, dim): P D ∇l_i for the examples of `batch`, P the Rademacher projection of `seed`
    (entries ±1/sqrt(dim)), D an optional diagonal preconditioner {name: tensor of the parameter's
    shape}. One capture of the batch, then ``dim`` dot products in chunks of `chunk` directions
    (no per-sample gradients formed for layers with a ghost form)."""
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    params = trainable(model)
    cap = persample.capture(model, loss_fn, batch, **persample_options)
    cols = []
    for start in range(0, dim, chunk):
        rows = _directions(params, start, min(start + chunk, dim), seed, dim)
        if preconditioner is not None:
            rows = [{n: v * preconditioner[n] if n in preconditioner else v for n, v in r.items()} for r in rows]
        cols.append(cap.dot(rows))
    return torch.cat(cols, 1)


def _exact_cosines(model, loss_fn, source, target, preconditioner, options) -> Tensor:
    cap_s = persample.capture(model, loss_fn, source, **options)
    cap_t = persample.capture(model, loss_fn, target, **options)
    if preconditioner is None:
        dots, ns = cap_s.gram(cap_t), cap_s.norms()
    else:
        gs = cap_s.per_sample_grads()
        flat_s = torch.cat(
            [(gs[n] * preconditioner[n] if n in preconditioner else gs[n]).flatten(1) for n in gs],
            1,
        )
        gt = cap_t.per_sample_grads()
        flat_t = torch.cat([gt[n].flatten(1) for n in gs], 1)
        dots, ns = flat_s @ flat_t.T, flat_s.pow(2).sum(1)
    nt = cap_t.norms()
    return dots / (ns.clamp_min(1e-300).sqrt()[:, None] * nt.clamp_min(1e-300).sqrt()[None, :])


def gradient_similarity(
    model: nn.Module,
    loss_fn: LossFn,
    source_batch: Any,
    target_batch: Any,
    *,
    dim: int | None = None,
    seed: int = 0,
    checkpoints: Sequence[Mapping[str, Tensor]] | None = None,
    lrs: Sequence[float] | None = None,
    preconditioners: Sequence[Mapping[str, Tensor] | None] | None = None,
    chunk: int = 64,
    **persample_options,
) -> Tensor:
    """(B_source,) float64 LESS scores of the source examples against the target batch.

    dim: projection dimension (None: exact cosines); checkpoints, lrs: state_dicts and their
    learning rates (None: the model as it is, weight 1); preconditioners: one diagonal
    preconditioner per checkpoint ({name: tensor}, see ``adam_preconditioner``) or None.
    """
    states = [None] if checkpoints is None else list(checkpoints)
    if not states:
        raise ValueError("checkpoints must be None (the current model) or a non-empty list of state_dicts")
    weights = [1.0] if checkpoints is None and lrs is None else check_lrs(lrs if lrs is not None else [], len(states))
    pre = [None] * len(states) if preconditioners is None else list(preconditioners)
    if len(pre) != len(states):
        raise ValueError(f"preconditioners must give one entry per checkpoint ({len(states)}), got {len(pre)}")
    total = None
    for state, lr, d in zip(states, weights, pre):
        with loaded(model, state):
            if dim is None:
                cos = _exact_cosines(model, loss_fn, source_batch, target_batch, d, persample_options)
            else:
                ps = project(
                    model,
                    loss_fn,
                    source_batch,
                    dim,
                    seed=seed,
                    preconditioner=d,
                    chunk=chunk,
                    **persample_options,
                )
                pt = project(
                    model,
                    loss_fn,
                    target_batch,
                    dim,
                    seed=seed,
                    chunk=chunk,
                    **persample_options,
                )
                ps = ps / ps.norm(dim=1, keepdim=True).clamp_min(1e-300)
                pt = pt / pt.norm(dim=1, keepdim=True).clamp_min(1e-300)
                cos = ps @ pt.T
        part = lr * cos.to(torch.float64).mean(1)
        total = part if total is None else total + part
    return total


def select_budget(scores: Tensor, budget: float, *, largest: bool = True) -> Tensor:
    """Indices of the `budget` best scores, best first: budget an int count, or a float fraction in
    (0, 1] of len(scores) (rounded, at least 1). largest=False picks the smallest (for values where
    negative means helpful, like ``InRun.values``)."""
    if not isinstance(scores, Tensor) or scores.dim() != 1:
        raise ValueError("scores must be a (N,) tensor")
    n = scores.shape[0]
    if isinstance(budget, float):
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"a fractional budget must be in (0, 1], got {budget}")
        k = max(1, round(budget * n))
    elif isinstance(budget, int) and not isinstance(budget, bool):
        if not 1 <= budget <= n:
            raise ValueError(f"budget must be between 1 and the number of scores ({n}), got {budget}")
        k = budget
    else:
        raise TypeError(f"budget must be an int count or a float fraction, got {type(budget).__name__}")
    return scores.topk(k, largest=largest).indices
