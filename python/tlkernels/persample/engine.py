"""One forward with every parameter use recorded, and the backward to the recorded outputs.

``Recorder`` hooks the modules that own trainable parameters (leaf rules), swaps in the
decomposed forward of composite rules, and records a ``LayerCall`` per use. After the forward:

- ``backward(losses)`` sets every call's output gradients (one backward with respect to the
  layer outputs only: autograd skips the weight-gradient GEMMs);
- in stream mode every output passes through a ``_Tap`` and each call (or group of calls) is
  turned into representations during the backward, as soon as its gradients are known, and its
  inputs are dropped, so memory falls as in a plain backward.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from .batch_axis import batch_axes as _batch_axes
from .registry import LayerCall, Rule, UnsupportedModuleError, rule_for

StreamFn = Callable[[Tensor, Any], None]  # (parameter, representation)


class ModifiedInPlace(Exception):
    """A recorded layer output was modified in place later in the forward."""


def own_trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in module._parameters.items() if p is not None and p.requires_grad}


class Plan:
    """Which rule handles which module, from one walk of the model.

    entries: (module name, module, rule, batch axis) for every module whose parameters are
        recorded; fallbacks: the subset handled by the fallback rule. A module owning parameters
    that no registered rule handles gets the bare-parameter rule, or the fallback once that rule
    found a use it cannot split (remembered per module).
    """

    def __init__(self, model: nn.Module, fallback: bool, batch_axes: dict | None = None):
        self.model, self.fallback, self.batch_axes = model, fallback, batch_axes
        self._build()

    def force_fallback(self, module: nn.Module) -> None:
        """Hands `module` to the torch.func fallback from now on (this plan and later ones)."""
        _FORCED_FALLBACK.add(module)
        self._build()

    def _build(self) -> None:
        from .rules.fallback import FALLBACK
        from .rules.parameters import BARE_PARAMETERS

        model, fallback = self.model, self.fallback
        axes = _batch_axes(model, self.batch_axes)
        self.entries: list[tuple[str, nn.Module, Rule, int]] = []
        self.fallbacks: list[tuple[str, nn.Module]] = []
        covered: set[int] = set()
        for name, module in model.named_modules():
            if id(module) in covered:
                continue
            rule = rule_for(module)
            if rule is not None and rule.decomposes:
                rule.check(module, name)
                covered.update(id(m) for m in rule.covers(module))
                self.entries.append((name, module, rule, axes[module]))
                continue
            if not own_trainable(module):
                continue
            if rule is None:
                if fallback and module in _FORCED_FALLBACK:
                    rule = FALLBACK
                    self.fallbacks.append((name, module))
                else:
                    rule = BARE_PARAMETERS
            rule.check(module, name)
            self.entries.append((name, module, rule, axes[module]))


# modules whose own parameters the bare-parameter rule could not split by sample
_FORCED_FALLBACK: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class Recorder:
    """Records the parameter uses of one forward (see the module docstring).

    batch_size_hint: the batch size, known before the forward only from the batch itself; used
        to widen inputs of batch size 1 that stand for the whole batch (a (1, T) position index).
    """

    def __init__(
        self,
        plan: Plan,
        *,
        stream: StreamFn | None = None,
        clone_outputs: bool = False,
        batch_size_hint: int | None = None,
    ):
        self.plan, self.stream, self.clone_outputs = plan, stream, clone_outputs
        self.batch_size_hint = batch_size_hint
        self.batch_size: int | None = None
        self.calls: list[LayerCall] = []
        self.widened = False
        self._outputs: dict[int, list[Tensor]] = {}
        self._anchor = torch.zeros((), requires_grad=True) if stream is not None else None
        self._pending: dict[Any, list[LayerCall]] = {}
        self._group_size: dict[Any, int] = {}
        self._undo: list[Callable[[], None]] = []
        self._groups = 0

    # -- setup ------------------------------------------------------------------------------------
    def __enter__(self) -> Recorder:
        for _, module, rule, axis in self.plan.entries:
            if rule.decomposes:
                self._patch_forward(module, rule)
            else:
                handle = module.register_forward_hook(
                    lambda m, args, kwargs, out, r=rule, a=axis: self.record(m, r, args, kwargs, out, a),
                    with_kwargs=True,
                )
                self._undo.append(handle.remove)
        return self

    def __exit__(self, *exc) -> None:
        while self._undo:
            self._undo.pop()()

    def _patch_forward(self, module: nn.Module, rule: Rule) -> None:
        had = "forward" in module.__dict__
        previous = module.__dict__.get("forward")

        def forward(*args, **kwargs):
            return rule.forward(module, self, *args, **kwargs)

        module.forward = forward

        def undo():
            if had:
                module.forward = previous
            else:
                del module.forward

        self._undo.append(undo)

    # -- recording ---------------------------------------------------------------------------------
    def axis_of(self, module: nn.Module) -> int:
        for _, m, _, axis in self.plan.entries:
            if m is module:
                return axis
        return 0

    def record(
        self,
        module: nn.Module,
        rule: Rule,
        args: tuple,
        kwargs: dict,
        output: Any,
        axis: int,
        *,
        info: dict | None = None,
        group: Any = None,
    ) -> Any:
        """Records one use and returns the output the forward goes on with (a tap in stream
        mode, a widened tensor for a broadcast input, else the output itself)."""
        if not torch.is_grad_enabled():
            return output
        leaves, spec = tree_flatten(output)
        positions = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor)]
        if not positions:
            raise UnsupportedModuleError(f"{type(module).__name__} returned no tensor; the capture cannot follow it")
        args = tuple(args)
        hint = self.batch_size_hint
        if (
            rule.broadcasts
            and hint
            and hint > 1
            and args
            and isinstance(args[0], Tensor)
            and args[0].dim() > axis
            and args[0].shape[axis] == 1
        ):
            # an input shared by the batch (positions (1, T)): widen it, and its output, to B
            args = (args[0].expand(*args[0].shape[:axis], hint, *args[0].shape[axis + 1 :]),) + args[1:]
            for i in positions:
                t = leaves[i]
                if t.dim() > axis and t.shape[axis] == 1:
                    leaves[i] = t.expand(*t.shape[:axis], hint, *t.shape[axis + 1 :])
            self.widened = True
        tensors = [leaves[i] for i in positions]
        call = LayerCall(
            module,
            rule,
            tree_map(_detach, args),
            tree_map(_detach, dict(kwargs)),
            axis,
            info=info or {},
            group=group,
            seq=len(self.calls),
        )
        call.output_meta = tuple((t.shape, t.dtype, t.device) for t in tensors)
        call.versions = tuple(t._version for t in tensors)
        call.input_versions = tuple(
            t._version for t in tree_flatten((call.args, call.kwargs))[0] if isinstance(t, Tensor)
        )
        self.calls.append(call)
        if self.stream is not None:
            tensors = list(
                _Tap.apply(
                    self._anchor,
                    lambda gs, c=call: self._consume(c, gs),
                    self.clone_outputs,
                    *tensors,
                )
            )
        else:
            # the recorded outputs are the originals; an in-place op later touches only the clone
            self._outputs[id(call)] = tensors
            if self.clone_outputs:
                tensors = [t.clone() for t in tensors]
        for i, t in zip(positions, tensors):
            leaves[i] = t
        return tree_unflatten(leaves, spec)

    # -- primitives for composite rules --------------------------------------------------------------
    def new_group(self) -> tuple:
        """A fresh key for calls that form one representation (the steps of a recurrence)."""
        self._groups += 1
        return ("group", self._groups)

    def linear(
        self,
        owner: nn.Module,
        x: Tensor,
        weight: str,
        bias: str | None,
        axis: int = 0,
        rows: tuple[int, int] | None = None,
        bias_rows: tuple[int, int] | None = None,
        group: Any = None,
    ) -> Tensor:
        """F.linear(x, W, b) for the parameters `weight` / `bias` of `owner` (only rows [r0, r1) of
        a packed weight / bias when `rows` / `bias_rows` are given; bias_rows defaults to rows),
        recorded per sample. Calls with the same `group` become one representation (the time
        steps of a recurrence)."""
        from .rules.linear import PROJECTION

        bias_rows = rows if bias_rows is None else bias_rows
        w = getattr(owner, weight)
        b = getattr(owner, bias) if bias is not None else None
        if rows is not None:
            w = w[rows[0] : rows[1]]
        if b is not None and bias_rows is not None:
            b = b[bias_rows[0] : bias_rows[1]]
        out = torch.nn.functional.linear(x, w, b)
        info = {"weight": weight, "bias": bias, "rows": rows, "bias_rows": bias_rows}
        return self.record(owner, PROJECTION, (x,), {}, out, axis, info=info, group=group)

    def parameter(self, owner: nn.Module, name: str, widened: Tensor, axis: int = 0) -> Tensor:
        """A parameter of `owner` used through a view widened to the batch (bias_k.expand(B, 1, E)):
        returns the recorded view; the gradient of each sample's slice is its per-sample gradient."""
        from .rules.linear import PARAMETER

        return self.record(owner, PARAMETER, (), {}, widened, axis, info={"name": name})

    # -- backward --------------------------------------------------------------------------------------
    def close_forward(self, losses: Tensor) -> None:
        self.batch_size = losses.shape[0]
        for c in self.calls:
            if (
                tuple(t._version for t in tree_flatten((c.args, c.kwargs))[0] if isinstance(t, Tensor))
                != c.input_versions
            ):
                raise UnsupportedModuleError(
                    f"the input of a {type(c.module).__name__} was modified in place after the layer used it; "
                    "the per-sample capture needs the layer inputs as they were: use the out-of-place op"
                )
        for c in self.calls:
            if c.group is not None:
                self._group_size[c.group] = self._group_size.get(c.group, 0) + 1

    def backward(self, losses: Tensor, retain_graph: bool = False) -> None:
        """Non-stream mode: sets call.grads = d(sum_i l_i)/d(outputs) for every call."""
        outs = []
        for c in self.calls:
            ts = self._outputs[id(c)]
            if tuple(t._version for t in ts) != c.versions:
                raise ModifiedInPlace()
            outs += ts
        grads = (
            list(
                torch.autograd.grad(
                    losses,
                    outs,
                    torch.ones_like(losses),
                    allow_unused=True,
                    retain_graph=retain_graph,
                )
            )
            if outs
            else []
        )
        it = iter(grads)
        for c in self.calls:
            c.grads = [
                torch.zeros(s, dtype=d, device=dev) if g is None else g
                for g, (s, d, dev) in zip((next(it) for _ in c.output_meta), c.output_meta)
            ]
        self._outputs.clear()

    def stream_backward(self, losses: Tensor) -> None:
        """Stream mode: the anchor feeds every tap, so this backward visits every recorded output
        that reaches the losses and computes nothing but a zero scalar; the taps consume."""
        torch.autograd.grad(losses.sum(), [self._anchor], allow_unused=True)
        for c in self.calls:
            if c.grads is None and c.args is not None:  # its output did not reach the losses
                self._consume(c, [None] * len(c.output_meta))

    def _consume(self, call: LayerCall, grads) -> None:
        call.grads = [
            torch.zeros(s, dtype=d, device=dev) if g is None else g for g, (s, d, dev) in zip(grads, call.output_meta)
        ]
        if call.group is None:
            self._emit([call])
            return
        pending = self._pending.setdefault(call.group, [])
        pending.append(call)
        if len(pending) == self._group_size[call.group]:
            del self._pending[call.group]
            self._emit(sorted(pending, key=lambda c: c.seq))

    def _emit(self, calls: list[LayerCall]) -> None:
        for p, rep in calls[0].rule.representations(calls, self.batch_size):
            self.stream(p, rep)
        for c in calls:
            c.args, c.kwargs, c.grads = None, None, None

    def representations(self) -> Iterator[tuple[Tensor, Any]]:
        """Non-stream mode, after backward(): (parameter, representation) for every call."""
        groups: dict[Any, list[LayerCall]] = {}
        order: list[Any] = []
        for i, c in enumerate(self.calls):
            key = ("call", i) if c.group is None else ("group", c.group)
            if key not in groups:
                order.append(key)
            groups.setdefault(key, []).append(c)
        for key in order:
            calls = groups[key]
            yield from calls[0].rule.representations(calls, self.batch_size)


def _detach(x):
    return x.detach() if isinstance(x, Tensor) else x


class _Tap(torch.autograd.Function):
    """Identity on a layer's output tensors whose backward hands their gradients to a callback.

    `anchor` (a 0-dim leaf) is an input of every tap: a backward with respect to it alone makes
    the engine visit every tapped output (skipping the weight-gradient GEMMs) while the callback
    consumes each output gradient as it appears.
    """

    @staticmethod
    def forward(ctx, anchor, callback, clone, *outs):
        ctx.callback = callback
        return tuple(o.clone() if clone else o.view_as(o) for o in outs)

    @staticmethod
    def backward(ctx, *grads):
        ctx.callback(grads)
        return (None, None, None) + grads


def infer_batch_size(batch: Any) -> int | None:
    """The leading size of the first tensor in the batch (a hint, checked against the losses)."""
    for leaf in tree_flatten(batch)[0]:
        if isinstance(leaf, Tensor) and leaf.dim() > 0:
            return leaf.shape[0]
    return None
