"""``Capture``: what one forward/backward of per-sample losses left behind, and the products
(dot, Gram, norms, weighted gradient) it answers without materialising per-sample gradients."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import invariant as _verify
from .engine import ModifiedInPlace, Plan, Recorder, infer_batch_size
from .reps import DenseRep, SliceRep, disjoint
from .reps import gram as _rep_gram
from .rules.parameters import NeedsFallback

LossFn = Callable[[nn.Module, Any], Tensor]


@dataclass
class Capture:
    """What one forward/backward of per-sample losses left behind.

    Attributes:
        losses: (B,) the per-sample losses (detached).
        batch_size: B.
        reps: parameter name -> list of per-sample gradient representations (one per recorded use
            of the parameter; several for tied weights or the q/k/v blocks of a packed weight).
        params: parameter name -> the parameter.
    """

    losses: Tensor
    batch_size: int
    reps: dict[str, list] = field(default_factory=dict)
    params: dict[str, nn.Parameter] = field(default_factory=dict)

    # -- products ------------------------------------------------------------------------------
    def dot(self, vectors: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]]) -> Tensor:
        """s_i = sum_p <dl_i/dp, v_p> over the parameters named in `vectors`.

        vectors: {name: tensor of the parameter's shape}, or a list of V such maps.
        Returns (B,) for one map, (B, V) for a list.
        """
        many, maps, names = check_vectors(vectors, self.params)
        s = self.losses.new_zeros((self.batch_size, len(maps)) if many else (self.batch_size,))
        for (
            name,
            p,
        ) in self.params.items():  # the parameters' order: the same sum in every run
            if name not in names:
                continue
            v = torch.stack([vector_for(m, name, p) for m in maps]) if many else vector_for(maps[0], name, p)
            for rep in self.reps[name]:
                s += rep.dot(v if v.dtype == rep.dtype else v.to(rep.dtype))
        return s

    def gram(self, other: Capture | None = None) -> Tensor:
        """(B1, B2) Gram <dl_i/dθ, dl'_j/dθ> over all captured parameters; other=None: with itself."""
        other = self if other is None else other
        if set(other.reps) != set(self.reps):
            raise ValueError("the two captures cover different parameters (capture both from the same model)")
        out = self.losses.new_zeros(self.batch_size, other.batch_size)
        for name, reps1 in self.reps.items():
            for r1 in reps1:
                for r2 in other.reps[name]:
                    out += _rep_gram(r1, r2)
        return out

    def norms(self) -> Tensor:
        """(B,) squared per-sample gradient norms over all captured parameters."""
        out = self.losses.new_zeros(self.batch_size)
        for reps in self.reps.values():
            if len(reps) == 1 or _pairwise_disjoint(reps):
                for r in reps:
                    out += r.norms()
            else:  # tied weights: the cross terms need the summed gradient
                out += sum(r.dense() for r in reps).flatten(1).pow(2).sum(1)
        return out

    def per_sample_grads(self) -> dict[str, Tensor]:
        """{name: (B, *shape)} materialised per-sample gradients (for checks and small models)."""
        return {name: sum(r.dense() for r in reps) for name, reps in self.reps.items()}

    def weighted_sum(self, weights: Tensor | None = None) -> dict[str, Tensor]:
        """{name: sum_i w_i dl_i/dp} for every captured parameter (one GEMM per linear layer).

        weights: (B,) per-sample weights (default: all ones, i.e. the gradient of losses.sum()).
        """
        if weights is None:
            weights = torch.ones_like(self.losses)
        weights = torch.as_tensor(weights, device=self.losses.device)
        if weights.shape != (self.batch_size,):
            raise ValueError(f"weights must have shape (B,) = ({self.batch_size},), got {tuple(weights.shape)}")
        out = {}
        for name, reps in self.reps.items():
            p = self.params[name]
            g = None
            for r in reps:
                part = r.weighted(weights if weights.dtype == r.dtype else weights.to(r.dtype))
                g = part if g is None else g + part
            out[name] = g.to(p.dtype).reshape(p.shape)
        return out

    def accumulate_grad(self, weights: Tensor | None = None) -> None:
        """Adds sum_i w_i dl_i/dp to ``p.grad`` for every captured parameter (creating it when None),
        without a second backward; never divides by a weight, so w_i = 0 is fine.

        weights: (B,) per-sample weights (default: all ones).
        """
        for name, g in self.weighted_sum(weights).items():
            p = self.params[name]
            if p.grad is None:
                p.grad = g.clone() if g.data_ptr() == p.data_ptr() else g
            else:
                p.grad.add_(g)


def _pairwise_disjoint(reps) -> bool:
    return all(isinstance(r, SliceRep) for r in reps) and all(
        disjoint(a, b) for i, a in enumerate(reps) for b in reps[i + 1 :]
    )


def check_vectors(vectors, params: Mapping[str, Tensor]) -> tuple[bool, list, set]:
    """(many, maps, names) of a map or list of maps of vectors, checked against `params`."""
    many = not isinstance(vectors, Mapping)
    maps = list(vectors) if many else [vectors]
    if many and not maps:
        raise ValueError("vectors must be a mapping or a non-empty list of mappings")
    for m in maps:
        if not isinstance(m, Mapping):
            raise TypeError(f"vectors must map parameter names to tensors, got {type(m).__name__}")
    names = set().union(*maps)
    unknown = names.difference(params)
    if unknown:
        raise KeyError(f"vectors name parameters that are not trainable parameters of the model: {sorted(unknown)}")
    return many, maps, names


def vector_for(m: Mapping[str, Tensor], name: str, p: Tensor) -> Tensor:
    """m[name] checked against the parameter's shape, detached, on its device (zeros if absent)."""
    if name not in m:
        return torch.zeros_like(p)
    v = m[name]
    if not isinstance(v, Tensor) or v.shape != p.shape:
        raise ValueError(
            f"vectors[{name!r}] must be a tensor of shape {tuple(p.shape)}, got "
            f"{tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}"
        )
    v = v.detach()
    return v if v.device == p.device else v.to(p.device)


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """{name: parameter} as ``model.named_parameters()`` names them (first name of a shared one)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def run_forward(
    plan: Plan,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    batch_size: int | None,
    clone_outputs: bool,
    stream=None,
) -> tuple[Tensor, Recorder]:
    """One recorded forward; checks the losses and closes the recording."""
    hint = batch_size if batch_size is not None else infer_batch_size(batch)
    rec = Recorder(plan, stream=stream, clone_outputs=clone_outputs, batch_size_hint=hint)
    try:
        with rec, torch.enable_grad():
            losses = loss_fn(model, batch)
    except NeedsFallback as e:
        # a module's own parameter is used in an op that does not broadcast it over the batch
        plan.force_fallback(e.module)
        _verify.announce_fallbacks(model, plan, e.reason)
        return run_forward(plan, model, loss_fn, batch, batch_size, clone_outputs, stream)
    except RuntimeError as e:
        if rec.widened:
            raise ValueError(f"{_widened_message(hint)}; the forward failed with: {e}") from e
        raise
    if not isinstance(losses, Tensor) or losses.dim() != 1:
        raise ValueError(
            "loss_fn(model, batch) must return per-sample losses of shape (B,), got "
            f"{tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__}"
        )
    if not losses.requires_grad:
        raise ValueError("loss_fn(model, batch) returned losses that do not depend on any trainable parameter")
    if rec.widened and losses.shape[0] != hint:
        raise ValueError(f"{_widened_message(hint)}, but the losses have {losses.shape[0]} entries")
    rec.close_forward(losses)
    return losses, rec


def _widened_message(hint: int) -> str:
    return (
        f"an input of batch size 1 shared by the batch (such as (1, T) position ids) was widened to {hint}, the "
        "leading size of the batch's first tensor; pass batch_size=B when the batch does not lead with B"
    )


def capture(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    *,
    fallback: bool = True,
    verify: bool | str = "auto",
    batch_axes: Mapping[str, int] | None = None,
    batch_size: int | None = None,
) -> Capture:
    """Runs ``loss_fn(model, batch)`` (which must return per-sample losses (B,)) and one backward,
    and records what per-sample products need for every trainable parameter of `model`.

    fallback: modules no rule handles go through torch.func (announced once per model) when True;
        refused with an error naming them when False.
    verify: "auto" checks the invariant sum_i w_i dl_i/dθ = d(sum_i w_i l_i)/dθ, for random w, on the
        first capture of each model structure (see ``tlkernels.persample.verify``); True on every
        call; False never. The environment variable TLK_PERSAMPLE_VERIFY=0 turns "auto" off.
    batch_axes: {module name: axis} for modules taking their batch on another axis than the one
        their type says (torch's sequence-first modules are known by their batch_first flag).
    batch_size: B, when the batch's first tensor does not lead with it (only needed to widen
        inputs of batch size 1 shared by the batch).

    The parameters' ``.grad`` are not touched. Raises ``UnsupportedModuleError`` for BatchNorm in
    training mode, and for unknown parametrised modules when ``fallback=False``;
    ``PerSampleCheckError`` when the check fails.
    """
    plan = Plan(model, fallback, batch_axes)
    _verify.announce_fallbacks(model, plan)
    check = _verify.should_check(verify, model, loss_fn, batch, plan, fallback, batch_axes)
    try:
        losses, rec = run_forward(plan, model, loss_fn, batch, batch_size, clone_outputs=False)
        rec.backward(losses, retain_graph=check)
    except ModifiedInPlace:
        # A layer output was modified in place later in the forward (ReLU(inplace=True) after a
        # Linear / Conv): run the forward again with each recorded output cloned, so that the
        # in-place op touches the clone and the output keeps its own gradient.
        losses, rec = run_forward(plan, model, loss_fn, batch, batch_size, clone_outputs=True)
        rec.backward(losses, retain_graph=check)
    cap = Capture(losses=losses.detach(), batch_size=losses.shape[0])
    trainable = trainable_parameters(model)
    names = {id(p): n for n, p in trainable.items()}
    for p, rep in rec.representations():
        full = names[id(p)]
        cap.params[full] = p
        cap.reps.setdefault(full, []).append(rep)
    recorded = set(cap.reps)
    for full, p in trainable.items():
        if full not in cap.reps:  # no recorded use: zero per-sample gradients (checked below)
            cap.params[full] = p
            cap.reps[full] = [DenseRep(p.new_zeros((cap.batch_size,) + tuple(p.shape)))]
    if check:
        report = verify.target if isinstance(verify, _verify._Report) else None
        _verify.check_capture(cap, losses, recorded, report)
        _verify.mark_checked(model, loss_fn, batch, plan, fallback, batch_axes)
    return cap
