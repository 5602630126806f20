"""Per-sample gradient products for whole models, without per-sample gradients.

One forward and one backward of the UNWEIGHTED per-sample losses record, for every layer, its
inputs and the gradient of the summed losses with respect to its output. From these:

- ``Capture.dot(vectors)``: s_i = sum_p <dl_i/dp, v_p> (SOSELETO's Q^T g), at about the cost of
  one extra layer forward per layer (the fused ``ghost_dot`` op for linear layers, the layer's
  own convolution for convolutions);
- ``Capture.gram(other)`` and ``Capture.norms()``: Grams and squared norms, choosing per layer
  between the ghost form and materialising that layer's per-sample gradients by cost
  (``persample_reps.ghost_is_cheaper``);
- ``Capture.accumulate_grad(weights)``: writes sum_i w_i dl_i/dp into ``p.grad`` without a
  second backward (one GEMM per linear layer; never divides by a weight, so w_i = 0 is fine).

Functional shortcuts: ``grad_dot``, ``grad_gram``, ``grad_norms``.

Supported layers: Linear (any leading dimensions), Conv1d/2d/3d (stride, padding incl. 'same',
padding modes, dilation, groups), Embedding (padding_idx), LayerNorm, GroupNorm and eval-mode
BatchNorm affine parameters, all biases, modules used several times (tied weights). BatchNorm in
training mode mixes samples and is refused. Any other module that owns trainable parameters goes
through a ``torch.func`` fallback for its own parameters (``fallback=True``, the default) or is
refused with an error that names it (``fallback=False``). A layer output modified in place later
(``ReLU(inplace=True)``) is detected and the forward is rerun with that output cloned; a layer
input modified in place after the layer used it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .persample_reps import ConvRep, DenseRep, EmbeddingRep, LinearRep, gram as _rep_gram

__all__ = ["Capture", "capture", "grad_dot", "grad_gram", "grad_norms", "UnsupportedModuleError"]

LossFn = Callable[[nn.Module, Any], Tensor]

_LINEAR = (nn.Linear,)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.LayerNorm, nn.GroupNorm)
_BATCHNORM = (nn.modules.batchnorm._BatchNorm,)
_KNOWN = _LINEAR + _CONV + _NORM + _BATCHNORM + (nn.Embedding,)


class UnsupportedModuleError(ValueError):
    """A module with trainable parameters that the capture cannot handle per sample."""


@dataclass
class _Call:
    module: nn.Module
    inputs: tuple  # detached positional inputs
    output: Any  # the output as produced (graph attached); replaced by its gradient later
    version: tuple = ()
    input_version: tuple = ()
    grad: Any = None


@dataclass
class Capture:
    """What one forward/backward of per-sample losses left behind.

    Attributes:
        losses: (B,) the per-sample losses (detached).
        batch_size: B.
        reps: parameter name -> list of per-sample gradient representations (one per call of the
            layer owning it; several for tied weights).
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
        many = not isinstance(vectors, Mapping)
        maps = list(vectors) if many else [vectors]
        if many and not maps:
            raise ValueError("vectors must be a mapping or a non-empty list of mappings")
        names = set()
        for m in maps:
            if not isinstance(m, Mapping):
                raise TypeError(f"vectors must map parameter names to tensors, got {type(m).__name__}")
            names.update(m)
        unknown = names.difference(self.params)
        if unknown:
            raise KeyError(f"vectors name parameters that are not trainable parameters of the model: {sorted(unknown)}")
        # One map: (B,) terms, the vectors passed as they are (no copy of a possibly large vector).
        s = self.losses.new_zeros((self.batch_size, len(maps)) if many else (self.batch_size,))
        for name, p in self.params.items():  # the parameters' order: the same sum in every run
            if name not in names:
                continue
            if many:
                v = torch.stack([self._vector(m, name, p) for m in maps])  # (V, *shape)
            else:
                v = self._vector(maps[0], name, p)
            for rep in self.reps[name]:
                dtype = _rep_dtype(rep)
                s += rep.dot(v if v.dtype == dtype else v.to(dtype))
        return s

    def gram(self, other: "Capture | None" = None) -> Tensor:
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
            if len(reps) == 1:
                out += reps[0].norms()
            else:  # tied weights: the cross terms need the summed gradient
                out += sum(r.dense() for r in reps).flatten(1).pow(2).sum(1)
        return out

    def per_sample_grads(self) -> dict[str, Tensor]:
        """{name: (B, *shape)} materialised per-sample gradients (for checks and small models)."""
        return {name: sum(r.dense() for r in reps) for name, reps in self.reps.items()}

    # -- bookkeeping -----------------------------------------------------------------------------
    def accumulate_grad(self, weights: Tensor | None = None) -> None:
        """Adds sum_i w_i dl_i/dp to ``p.grad`` for every captured parameter (creating it when None).

        weights: (B,) per-sample weights (default: all ones, i.e. the gradient of losses.sum()).
        """
        if weights is None:
            weights = torch.ones_like(self.losses)
        weights = torch.as_tensor(weights, device=self.losses.device)
        if weights.shape != (self.batch_size,):
            raise ValueError(f"weights must have shape (B,) = ({self.batch_size},), got {tuple(weights.shape)}")
        for name, reps in self.reps.items():
            p = self.params[name]
            g = None
            for r in reps:
                dtype = _rep_dtype(r)
                part = r.weighted(weights if weights.dtype == dtype else weights.to(dtype))
                g = part if g is None else g + part
            if g.dtype != p.dtype:
                g = g.to(p.dtype)
            if g.shape != p.shape:
                g = g.reshape(p.shape)
            if p.grad is None:
                p.grad = g.clone() if g.data_ptr() == p.data_ptr() else g
            else:
                p.grad.add_(g)

    @staticmethod
    def _vector(m: Mapping[str, Tensor], name: str, p: Tensor) -> Tensor:
        if name not in m:
            return torch.zeros_like(p)
        v = m[name]
        if not isinstance(v, Tensor) or v.shape != p.shape:
            raise ValueError(f"vectors[{name!r}] must be a tensor of shape {tuple(p.shape)}, got "
                             f"{tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}")
        v = v.detach()
        return v if v.device == p.device else v.to(p.device)


def _rep_dtype(rep) -> torch.dtype:
    for attr in ("d", "g", "dy"):
        if hasattr(rep, attr):
            return getattr(rep, attr).dtype
    raise AssertionError(rep)


# ---------------------------------------------------------------------------------------------
# the capture
# ---------------------------------------------------------------------------------------------
def _own_trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in module._parameters.items() if p is not None and p.requires_grad}


def capture(model: nn.Module, loss_fn: LossFn, batch: Any, *, fallback: bool = True) -> Capture:
    """Runs ``loss_fn(model, batch)`` (which must return per-sample losses (B,)) and one backward,
    and records what per-sample products need for every trainable parameter of `model`.

    The parameters' ``.grad`` are not touched. Raises ``UnsupportedModuleError`` for BatchNorm in
    training mode, and for unknown parametrised modules when ``fallback=False``.
    """
    owners, trainable = _owners(model, fallback)
    names = {id(p): n for n, p in trainable.items()}
    try:
        losses, calls = _forward_backward(model, loss_fn, batch, owners, clone_outputs=False)
    except _ModifiedInPlace:
        # A layer output was modified in place later in the forward (ReLU(inplace=True) after a
        # Linear / Conv): run the forward again with each captured output cloned, so that the
        # in-place op touches the clone and the output keeps its own gradient.
        losses, calls = _forward_backward(model, loss_fn, batch, owners, clone_outputs=True)
    batch_size = losses.shape[0]

    cap = Capture(losses=losses.detach(), batch_size=batch_size)
    for call in calls:
        for pname, rep in _representations(call, batch_size, fallback):
            p = call.module._parameters[pname]
            full = names[id(p)]
            cap.params[full] = p
            cap.reps.setdefault(full, []).append(rep)
    for full, p in trainable.items():
        if full in cap.reps:
            continue
        # trainable but unused in this forward: zero per-sample gradients
        cap.params[full] = p
        cap.reps[full] = [DenseRep(p.new_zeros((batch_size,) + tuple(p.shape)))]
    return cap


def _owners(model: nn.Module, fallback: bool) -> tuple[list[nn.Module], dict[str, nn.Parameter]]:
    """The modules owning trainable parameters, each once, and the trainable parameters by full
    name (as ``model.named_parameters()`` names them: the first name of a shared parameter), from
    one walk of the model; refuses training-mode BatchNorm, and unknown parametrised modules when
    fallback=False."""
    owners: list[nn.Module] = []
    trainable: dict[str, nn.Parameter] = {}
    seen_params: set[int] = set()
    for mname, module in model.named_modules():  # each module once
        own = _own_trainable(module)
        if not own:
            continue
        if isinstance(module, _BATCHNORM) and module.training:
            raise UnsupportedModuleError(
                f"module {mname or type(module).__name__} ({type(module).__name__}) is BatchNorm in training mode, "
                "which mixes samples so per-sample gradients are undefined: use GroupNorm or LayerNorm, or put "
                "the BatchNorm in eval mode (module.eval()) to use its running statistics")
        if not isinstance(module, _KNOWN) and not fallback:
            raise UnsupportedModuleError(
                f"module {mname or '<root>'} ({type(module).__name__}) owns trainable parameters "
                f"{sorted(own)} that the per-sample capture does not support; pass fallback=True "
                "to handle it with torch.func, or freeze those parameters")
        owners.append(module)
        for pname, p in own.items():
            if id(p) not in seen_params:
                seen_params.add(id(p))
                trainable[f"{mname}.{pname}" if mname else pname] = p
    return owners, trainable


class _ModifiedInPlace(Exception):
    pass


def _forward_backward(model: nn.Module, loss_fn: LossFn, batch: Any, owners: list[nn.Module],
                      clone_outputs: bool, stream: Callable[[_Call, int], None] | None = None
                      ) -> tuple[Tensor, list[_Call]]:
    """One forward with hooks on `owners`, checks of the losses, and the backward to the outputs.

    stream=None: every call keeps its inputs and gets its output gradient in ``call.grad``.
    stream=f: each layer output passes through a ``_Tap``; during the backward, as soon as a
    call's output gradient is known, f(call, batch_size) consumes it and the call's inputs and
    gradient are dropped, so memory falls as in a plain backward.
    """
    calls: list[_Call] = []
    anchor = torch.zeros((), requires_grad=True) if stream is not None else None
    state = {"batch_size": None, "single": {}}

    consumed: set[int] = set()

    def consume(call: _Call, grads) -> None:
        # call.output holds meta tensors (shapes only) in stream mode: the real outputs are not kept
        device = next((x.device for x in call.inputs if isinstance(x, Tensor)), None)
        gs = [torch.zeros(m.shape, dtype=m.dtype, device=device) if g is None else g
              for g, m in zip(grads, call.output)]
        call.grad = gs[0] if state["single"][id(call)] else tuple(gs)
        stream(call, state["batch_size"])
        consumed.add(id(call))
        call.inputs, call.grad = (), None

    def hook(module, inputs, output):
        if not torch.is_grad_enabled():
            return None
        call = _Call(module, tuple(x.detach() if isinstance(x, Tensor) else x for x in inputs), output)
        call.version = tuple(o._version for o in _tensors(output))
        call.input_version = tuple(x._version for x in call.inputs if isinstance(x, Tensor))
        calls.append(call)
        if stream is not None:
            tensors = _tensors(output)
            state["single"][id(call)] = isinstance(output, Tensor)
            call.output = tuple(torch.empty_like(o, device="meta") for o in tensors)
            tapped = iter(_Tap.apply(anchor, lambda gs, c=call: consume(c, gs), clone_outputs, *tensors))
            if isinstance(output, Tensor):
                return next(tapped)
            return type(output)(next(tapped) if isinstance(o, Tensor) else o for o in output)
        if not clone_outputs:
            return None
        if isinstance(output, Tensor):
            return output.clone()
        return type(output)(o.clone() if isinstance(o, Tensor) else o for o in output)

    handles = [m.register_forward_hook(hook) for m in owners]
    try:
        with torch.enable_grad():
            losses = loss_fn(model, batch)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(losses, Tensor) or losses.dim() != 1:
        raise ValueError("loss_fn(model, batch) must return per-sample losses of shape (B,), got "
                         f"{tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__}")
    if not losses.requires_grad:
        raise ValueError("loss_fn(model, batch) returned losses that do not depend on any trainable parameter")
    for c in calls:
        if tuple(x._version for x in c.inputs if isinstance(x, Tensor)) != c.input_version:
            raise UnsupportedModuleError(
                f"the input of a {type(c.module).__name__} was modified in place after the layer used it; "
                "the per-sample capture needs the layer inputs as they were: use the out-of-place op")
    if stream is None:
        _backward_to_outputs(losses, calls)
    else:
        state["batch_size"] = losses.shape[0]
        # The anchor feeds every tap, so this backward visits every layer output that reaches the
        # losses, and computes (and keeps) nothing but a zero scalar.
        torch.autograd.grad(losses.sum(), [anchor], allow_unused=True)
        for c in calls:
            if id(c) not in consumed:  # its output did not reach the losses: zero gradient
                consume(c, [None] * len(c.output))
    return losses, calls


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


def _tensors(output) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [o for o in output if isinstance(o, Tensor)]
    raise UnsupportedModuleError(f"module output of type {type(output).__name__} is not supported by the capture")


def _backward_to_outputs(losses: Tensor, calls: list[_Call]) -> None:
    """Sets call.grad = d(sum_i l_i)/d(output) for every call: one backward with respect to the
    layer outputs only (autograd skips the weight-gradient GEMMs).

    An output modified in place after its layer (ReLU(inplace=True) on a Linear output) would
    give the gradient after the modification: that is detected by the tensor's version counter
    and signalled to capture(), which reruns the forward with the outputs cloned.
    """
    outs = [o for c in calls for o in _tensors(c.output)]
    if any(o._version != v for c in calls for o, v in zip(_tensors(c.output), c.version)):
        raise _ModifiedInPlace()
    # d(sum_i l_i)/d(outputs): ones as the losses' gradient, without a sum node to differentiate
    grads = torch.autograd.grad(losses, outs, torch.ones_like(losses), allow_unused=True) if outs else []
    it = iter(grads)
    for c in calls:
        gs = [next(it) for _ in _tensors(c.output)]
        gs = [torch.zeros_like(o) if g is None else g for g, o in zip(gs, _tensors(c.output))]
        c.grad = gs[0] if isinstance(c.output, Tensor) else tuple(gs)
    for c in calls:
        c.output = None  # the outputs themselves are not needed any more

def _batch_check(module: nn.Module, t: Tensor, batch_size: int) -> None:
    if t.dim() == 0 or t.shape[0] != batch_size:
        raise ValueError(f"{type(module).__name__} got an input of shape {tuple(t.shape)} whose leading dimension "
                         f"is not the batch size {batch_size}: per-sample products need batch-first layer inputs")


def _representations(call: _Call, batch_size: int, fallback: bool):
    """Yields (parameter name within the module, representation) for one layer call."""
    m, x, dy = call.module, call.inputs[0] if call.inputs else None, call.grad
    own = _own_trainable(m)
    if isinstance(m, _LINEAR):
        _batch_check(m, x, batch_size)
        a = x.reshape(batch_size, -1, x.shape[-1])
        d = dy.reshape(batch_size, -1, dy.shape[-1])
        if "weight" in own:
            yield "weight", LinearRep(a, d)
        if "bias" in own:
            # a contiguous 2-D output gradient (B, O) is the per-sample bias gradient as it is
            yield "bias", DenseRep(dy if dy.dim() == 2 and dy.is_contiguous() else d.sum(1))
    elif isinstance(m, _CONV):
        _batch_check(m, x, batch_size)
        unbatched = x.dim() == len(m.kernel_size) + 1
        if unbatched:
            raise ValueError(f"{type(m).__name__} got an unbatched input of shape {tuple(x.shape)}")
        if "weight" in own:
            yield "weight", ConvRep(m, x, dy)
        if "bias" in own:
            yield "bias", DenseRep(dy.flatten(2).sum(2))
    elif isinstance(m, nn.Embedding):
        _batch_check(m, x, batch_size)
        if m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
            raise UnsupportedModuleError(
                f"Embedding with max_norm / scale_grad_by_freq / sparse is not supported by the per-sample capture")
        idx = x.reshape(batch_size, -1)
        d = dy.reshape(batch_size, idx.shape[1], -1)
        yield "weight", EmbeddingRep(idx, d, m.num_embeddings, m.padding_idx)
    elif isinstance(m, nn.LayerNorm):
        _batch_check(m, x, batch_size)
        xhat = F.layer_norm(x, m.normalized_shape, None, None, m.eps)
        k = len(m.normalized_shape)
        lead = tuple(range(1, x.dim() - k))
        if "weight" in own:
            g = (dy * xhat).sum(lead) if lead else dy * xhat
            yield "weight", DenseRep(g)
        if "bias" in own:
            yield "bias", DenseRep(dy.sum(lead) if lead else dy)
    elif isinstance(m, nn.GroupNorm):
        _batch_check(m, x, batch_size)
        xhat = F.group_norm(x, m.num_groups, None, None, m.eps)
        spatial = tuple(range(2, x.dim()))
        if "weight" in own:
            yield "weight", DenseRep((dy * xhat).sum(spatial) if spatial else dy * xhat)
        if "bias" in own:
            yield "bias", DenseRep(dy.sum(spatial) if spatial else dy)
    elif isinstance(m, _BATCHNORM):  # eval mode (training mode was refused above)
        _batch_check(m, x, batch_size)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if m.running_mean is None:
            raise UnsupportedModuleError("BatchNorm without running statistics (track_running_stats=False) "
                                         "normalises with batch statistics, which mixes samples")
        xhat = (x - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
        spatial = tuple(range(2, x.dim()))
        if "weight" in own:
            yield "weight", DenseRep((dy * xhat).sum(spatial) if spatial else dy * xhat)
        if "bias" in own:
            yield "bias", DenseRep(dy.sum(spatial) if spatial else dy)
    else:
        yield from _fallback_representations(call, batch_size)


def _fallback_representations(call: _Call, batch_size: int):
    """Per-sample gradients of a module's own parameters with torch.func: for each sample, the
    gradient of <module_p(x_i), dy_i> with respect to p (the module must treat samples
    independently, as any layer outside a batch-norm does)."""
    from torch.func import functional_call, grad, vmap

    m = call.module
    own = _own_trainable(m)
    for x in call.inputs:
        if isinstance(x, Tensor):
            _batch_check(m, x, batch_size)
    dys = [call.grad] if isinstance(call.grad, Tensor) else list(call.grad)
    tensor_pos = [i for i, x in enumerate(call.inputs) if isinstance(x, Tensor)]

    def contribution(params, tensor_inputs, dys_i):
        args = list(call.inputs)
        for k, pos in enumerate(tensor_pos):
            args[pos] = tensor_inputs[k].unsqueeze(0)
        out = functional_call(m, params, tuple(args))
        outs = _tensors(out)
        return sum((o * d.unsqueeze(0)).sum() for o, d in zip(outs, dys_i))

    params = {n: p.detach() for n, p in own.items()}
    per_sample = vmap(grad(contribution), in_dims=(None, 0, 0))(
        params, [call.inputs[i] for i in tensor_pos], dys)
    for n in own:
        yield n, DenseRep(per_sample[n])


# ---------------------------------------------------------------------------------------------
# functional shortcuts
# ---------------------------------------------------------------------------------------------
def grad_dot(model: nn.Module, loss_fn: LossFn, batch: Any,
             vectors: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]], *, fallback: bool = True) -> Tensor:
    """s_i = sum_p <dl_i/dp, v_p>: (B,) for a map of vectors, (B, V) for a list of V maps.

    loss_fn(model, batch) returns per-sample losses (B,); vectors map parameter names (as in
    ``model.named_parameters()``) to tensors of their shapes.

    Equal to ``capture(model, loss_fn, batch).dot(vectors)``, but streamed: each layer's share of
    s is computed during the backward as soon as its output gradient is known, and the layer's
    inputs and output gradient are dropped at once, so peak memory stays near a plain training
    step (a capture keeps every layer's output gradient for later products and the weighted step).
    """
    many = not isinstance(vectors, Mapping)
    maps = list(vectors) if many else [vectors]
    if many and not maps:
        raise ValueError("vectors must be a mapping or a non-empty list of mappings")
    for m in maps:
        if not isinstance(m, Mapping):
            raise TypeError(f"vectors must map parameter names to tensors, got {type(m).__name__}")
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = set().union(*maps)
    unknown = names - set(trainable)
    if unknown:
        raise KeyError(f"vectors name parameters that are not trainable parameters of the model: {sorted(unknown)}")
    # (V, *shape) per parameter; for one map a view (no copy of a possibly large vector)
    stacked = {n: (Capture._vector(maps[0], n, trainable[n]).unsqueeze(0) if len(maps) == 1 else
                   torch.stack([Capture._vector(m, n, trainable[n]) for m in maps])) for n in names}
    full_name = {id(p): n for n, p in trainable.items()}
    acc: dict[str, Tensor] = {}

    def on_call(call: _Call, batch_size: int) -> None:
        for pname, rep in _representations(call, batch_size, fallback):
            name = full_name[id(call.module._parameters[pname])]
            if name in stacked:
                part = rep.dot(stacked[name].to(_rep_dtype(rep)))
                acc["s"] = part if "s" not in acc else acc["s"] + part

    owners, _ = _owners(model, fallback)
    try:
        losses, _ = _forward_backward(model, loss_fn, batch, owners, clone_outputs=False, stream=on_call)
    except RuntimeError as e:
        if "inplace" not in str(e) or "custom Function" not in str(e):
            raise
        # A layer output is modified in place later in the forward (ReLU(inplace=True)): the taps'
        # views cannot be, so run again with the outputs cloned.
        acc.clear()
        losses, _ = _forward_backward(model, loss_fn, batch, owners, clone_outputs=True, stream=on_call)
    s = acc.get("s", losses.new_zeros(losses.shape[0], len(maps))).to(losses.dtype)
    return s if many else s[:, 0]


def grad_gram(model: nn.Module, loss_fn: LossFn, batch1: Any, batch2: Any) -> Tensor:
    """(B1, B2) Gram of per-sample gradients over all trainable parameters."""
    return capture(model, loss_fn, batch1).gram(capture(model, loss_fn, batch2))


def grad_norms(model: nn.Module, loss_fn: LossFn, batch: Any) -> Tensor:
    """(B,) squared per-sample gradient norms over all trainable parameters."""
    return capture(model, loss_fn, batch).norms()
