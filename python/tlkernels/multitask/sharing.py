"""Multi-task networks (Lampert 2019, Part IV): hard sharing (one trunk, per-task heads) and the soft
sharing penalty  lam * sum_{s,t} ||eta_s - eta_t||^2 + mu * sum_{s,t} ||beta_s - beta_t||^2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["HardSharingNet", "PerTaskNets", "SoftSharingPenalty", "check_task_name", "pairwise_sq_distance"]


def check_task_name(name, arg: str = "task") -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"{arg}: task names must be non-empty strings without '.', got {name!r}")
    return name


def _module_dict(mods, arg: str) -> nn.ModuleDict:
    if not isinstance(mods, Mapping) or not mods:
        raise ValueError(f"{arg} must be a non-empty dict {{task name: nn.Module}}, got {type(mods).__name__}")
    for k, m in mods.items():
        check_task_name(k, arg)
        if not isinstance(m, nn.Module):
            raise ValueError(f"{arg}[{k!r}] must be an nn.Module, got {type(m).__name__}")
    return nn.ModuleDict(dict(mods))


class HardSharingNet(nn.Module):
    """Hard parameter sharing: a shared trunk phi_eta and one head beta_t per task.

    Args:
        trunk: nn.Module, x (N, ...) -> features (N, D).
        heads: {task name: nn.Module (N, D) -> logits (N, C_t)}.

    forward(x) -> {task: logits (N, C_t)} (the trunk runs once).
    """

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module]):
        super().__init__()
        if not isinstance(trunk, nn.Module):
            raise ValueError(f"trunk must be an nn.Module, got {type(trunk).__name__}")
        self.trunk = trunk
        self.heads = _module_dict(heads, "heads")

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x)
        return {t: head(h) for t, head in self.heads.items()}


class PerTaskNets(nn.Module):
    """One network per task, heads[t](trunks[t](x)): separate training, or soft sharing when the
    trunks / heads are coupled by a ``SoftSharingPenalty``.

    Args:
        trunks, heads: {task name: nn.Module} with the same task names.

    forward(x) -> {task: logits (N, C_t)}.
    """

    def __init__(self, trunks: Mapping[str, nn.Module], heads: Mapping[str, nn.Module]):
        super().__init__()
        self.trunks = _module_dict(trunks, "trunks")
        self.heads = _module_dict(heads, "heads")
        if list(self.trunks) != list(self.heads):
            raise ValueError(
                f"trunks and heads must name the same tasks in the same order, got "
                f"{list(self.trunks)} and {list(self.heads)}"
            )

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {t: self.heads[t](self.trunks[t](x)) for t in self.heads}


def _as_list(mods, arg: str) -> list[nn.Module]:
    if isinstance(mods, nn.ModuleDict) or isinstance(mods, Mapping):
        mods = list(mods.values())
    elif isinstance(mods, (Sequence, nn.ModuleList)):
        mods = list(mods)
    else:
        raise ValueError(f"{arg} must be a dict or list of nn.Module (one per task), got {type(mods).__name__}")
    for m in mods:
        if not isinstance(m, nn.Module):
            raise ValueError(f"{arg} must hold nn.Module objects, got {type(m).__name__}")
    return mods


def pairwise_sq_distance(mods, arg: str = "modules", mismatched: str = "error") -> Tensor:
    """sum over ordered task pairs (s, t) of ||theta_s - theta_t||^2 (the s = t terms are 0, so this is
    Lampert 2019's sum over s != t, each unordered pair counted twice).

    Parameters are paired by name (``named_parameters``): every module must have the same
    parameter names. Parameters of a name whose shapes differ between tasks (heads with different
    numbers of classes) raise a ValueError with mismatched='error'; with 'skip' only tasks of equal
    shape are compared (Lampert 2019's "same output space" condition, applied per shape group).
    Computed as sum_groups 2|G| sum_{t in G} ||theta_t - mean_G||^2.
    """
    mods = _as_list(mods, arg)
    if len(mods) < 2:
        p = next(iter(mods[0].parameters()), None) if mods else None
        return torch.zeros((), device=None if p is None else p.device)
    params = [dict(m.named_parameters()) for m in mods]
    names = list(params[0])
    for k, p in enumerate(params[1:], 1):
        if set(p) != set(names):
            raise ValueError(
                f"{arg}: module {k} has parameters {sorted(p)}, module 0 has {sorted(names)}; "
                "soft sharing pairs parameters by name, so the architectures must match"
            )
    total = None
    for n in names:
        groups: dict[tuple, list[Tensor]] = {}
        for p in params:
            groups.setdefault(tuple(p[n].shape), []).append(p[n])
        if len(groups) > 1 and mismatched == "error":
            raise ValueError(
                f"{arg}: parameter {n!r} has different shapes across tasks {list(groups)}; "
                "pass mismatched='skip' to compare only tasks of equal shape"
            )
        for g in groups.values():
            if len(g) < 2:
                continue
            stack = torch.stack(g)
            term = 2 * len(g) * (stack - stack.mean(0, keepdim=True)).pow(2).sum()
            total = term if total is None else total + term
    if total is None:
        total = torch.zeros((), device=params[0][names[0]].device if names else None)
    return total


class SoftSharingPenalty(nn.Module):
    """The soft-sharing term of Lampert 2019:
    lam * sum_{s,t} ||eta_s - eta_t||^2 + mu * sum_{s,t} ||beta_s - beta_t||^2
    over per-task representation parameters eta_t (trunks) and head parameters beta_t (heads).

    Args:
        lam: >= 0, weight of the trunk (representation) disagreement.
        mu: >= 0, weight of the head (classifier) disagreement.
        mismatched: 'error' or 'skip': what to do when a head parameter's shape differs between
            tasks (different numbers of classes); 'skip' compares heads only within equal shapes.

    forward(trunks, heads=None) -> scalar Tensor. trunks / heads: dict {task: nn.Module} or a list,
    one module per task, all with the same architecture; parameters are paired by name.
    lam = 0 decouples the trunks (separate training), lam -> infinity forces equal trunks (hard
    sharing; ``MultiTaskClassifier(lam=float('inf'))`` implements that limit exactly by tying).
    """

    def __init__(self, lam: float = 0.0, mu: float = 0.0, mismatched: str = "error"):
        super().__init__()
        for name, v in (("lam", lam), ("mu", mu)):
            if not (isinstance(v, (int, float)) and 0 <= v < float("inf")):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if mismatched not in ("error", "skip"):
            raise ValueError(f"mismatched must be 'error' or 'skip', got {mismatched!r}")
        self.lam, self.mu, self.mismatched = float(lam), float(mu), mismatched

    def forward(self, trunks, heads=None) -> Tensor:
        out = None
        if self.lam > 0:
            out = self.lam * pairwise_sq_distance(trunks, "trunks", "error")
        if self.mu > 0 and heads is not None:
            h = self.mu * pairwise_sq_distance(heads, "heads", self.mismatched)
            out = h if out is None else out + h
        if out is None:
            first = _as_list(trunks, "trunks")
            p = next(iter(first[0].parameters()), None) if first else None
            out = torch.zeros((), device=None if p is None else p.device)
        return out

    def extra_repr(self) -> str:
        return f"lam={self.lam:g}, mu={self.mu:g}, mismatched={self.mismatched!r}"
