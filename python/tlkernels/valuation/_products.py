"""s_i = Σ_p η_p <∇_p l_i, ∇_p L_val> from a capture of the training batch and one of the
validation batch, each parameter by the cheaper of two routes:

- dot: ∇_p L_val = Σ_j u_j ∇_p l_j formed from the validation capture (one GEMM over the B_val
  rows), then ``Capture.dot`` over the B training rows (one layer forward's worth);
- Gram: the (B, B_val) ghost Gram of the two captures times u, with no parameter-sized product at
  all (Bu et al.'s ghost clipping products): cheaper for linear layers when B_val is small and
  sequences are short, B B_val T T' (I + O) < (B T + B_val T') I O.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..persample import Capture
from ..persample.reps import LinearRep, SliceRep


def _linear(rep) -> LinearRep | None:
    inner = rep.inner if isinstance(rep, SliceRep) else rep
    return inner if isinstance(inner, LinearRep) else None


def _gram_is_cheaper(reps, reps_val) -> bool:
    """True when every use of the parameter is a linear map and the ghost Gram costs less."""
    lin, lin_v = [_linear(r) for r in reps], [_linear(r) for r in reps_val]
    if any(r is None for r in lin + lin_v):
        return False
    gram = dot = 0
    for r in lin:
        b, t, n_in = r.a.shape
        n_out = r.d.shape[2]
        dot += b * t * n_in * n_out
        for rv in lin_v:
            gram += b * rv.a.shape[0] * t * rv.a.shape[1] * (n_in + n_out)
    for rv in lin_v:
        dot += rv.a.shape[0] * rv.a.shape[1] * rv.a.shape[2] * rv.d.shape[2]
    return gram < dot


def _sub(cap: Capture, names) -> Capture:
    return Capture(
        losses=cap.losses,
        batch_size=cap.batch_size,
        reps={n: cap.reps[n] for n in names},
        params={n: cap.params[n] for n in names},
    )


def val_products(cap: Capture, cap_val: Capture, rates: Mapping[str, float]) -> Tensor:
    """(B,) s_i = Σ_p rates[p] <∇_p l_i, ∇_p L_val>, L_val the mean loss of the validation capture.

    cap: capture of the training batch (B); cap_val: capture of the validation batch (B_val) from
    the same model; rates: {parameter name: learning rate} (0 or absent: left out).
    """
    u = torch.full_like(cap_val.losses, 1.0 / cap_val.batch_size)
    s = cap.losses.new_zeros(cap.batch_size)
    groups: dict[float, dict[str, list[str]]] = {}
    for name in cap.reps:
        lr = float(rates.get(name, 0.0))
        if lr == 0.0:
            continue
        route = "gram" if _gram_is_cheaper(cap.reps[name], cap_val.reps[name]) else "dot"
        groups.setdefault(lr, {"gram": [], "dot": []})[route].append(name)
    for lr, routes in groups.items():
        if routes["gram"]:
            g = _sub(cap, routes["gram"]).gram(_sub(cap_val, routes["gram"]))
            s += lr * (g @ u.to(g.dtype))
        if routes["dot"]:
            g_val = _sub(cap_val, routes["dot"]).weighted_sum(u)
            s += lr * _sub(cap, routes["dot"]).dot(g_val)
    return s
