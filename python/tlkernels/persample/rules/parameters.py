"""Parameters a module uses in its own forward, outside any submodule (a ViT's class token and
position embedding, a learned scale): per-sample gradients from the op that uses them.

This rule handles every module that owns trainable parameters and has no rule of its own. Its
forward runs under a TorchFunctionMode that watches the module's own parameters. Where one enters
an op that broadcasts it over the batch (``x + p``, ``x * p``, ``p.expand(B, ...)``), it is
replaced by its view widened to the batch, recorded: the gradient of sample i's slice of that view
is the sample's gradient of the parameter (``ParameterRule``), and the values are unchanged. Any
other use (a matmul, a reshape, an index) cannot be split that way: the capture then hands the
module to the torch.func fallback (announced), or refuses it when ``fallback=False``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..engine import own_trainable
from ..registry import LayerCall, Rule, UnsupportedModuleError
from ..reps import LinearRep

_T = torch.Tensor
# ops that broadcast their tensor arguments elementwise (the parameter may be any argument)
_ELEMENTWISE = {
    torch.add, torch.sub, torch.mul, torch.div,
    _T.add, _T.sub, _T.mul, _T.div, _T.__add__, _T.__radd__, _T.__sub__, _T.__rsub__,
    _T.__mul__, _T.__rmul__, _T.__truediv__, _T.__rtruediv__,
    torch.addcmul, _T.addcmul, torch.addcdiv, _T.addcdiv,
}  # fmt: skip
# in-place elementwise ops: the parameter may be an argument, never the tensor modified
_INPLACE = {
    _T.add_,
    _T.sub_,
    _T.mul_,
    _T.div_,
    _T.__iadd__,
    _T.__isub__,
    _T.__imul__,
    _T.__itruediv__,
}
# ops that broadcast the parameter itself to a shape
_EXPAND = {_T.expand, _T.expand_as, _T.broadcast_to, torch.broadcast_to}
# matrix products that apply a watched matrix to the input as a linear map
_MATMUL = {torch.matmul, _T.matmul, _T.__matmul__, F.linear}
# ops that transpose a matrix
_TRANSPOSE = {_T.t, torch.t, _T.T.__get__, _T.mT.__get__, _T.transpose, torch.transpose}
# ops giving the parameter's elements in the same order (a view to broadcast later, a cast)
_SAME_ORDER = {
    _T.reshape, _T.view, _T.unsqueeze, _T.squeeze, _T.flatten, _T.contiguous, _T.to, _T.type_as,
    torch.reshape, torch.unsqueeze, torch.squeeze, torch.flatten,
}  # fmt: skip


class NeedsFallback(Exception):
    """A parameter was used in a way this rule cannot split by sample (the capture retries with
    the module under the torch.func fallback)."""

    def __init__(self, module: nn.Module, reason: str):
        super().__init__(reason)
        self.module, self.reason = module, reason


class BareParameterRule(Rule):
    decomposes = True

    def forward(self, module: nn.Module, recorder, *args, **kwargs):
        own = own_trainable(module)
        watch = _Watch(module, recorder, {id(p): (n, p, "same") for n, p in own.items()})
        with watch:
            return type(module).forward(module, *args, **kwargs)


class MatmulRule(Rule):
    """A module's own matrix used as a linear map of its input: ``x @ W`` (W of shape (I, O)),
    ``x @ W.T`` or ``F.linear(x, W, b)`` (W of shape (O, I)); call.info names the weight, its
    layout and the bias."""

    def representations(self, calls: list[LayerCall], batch_size: int):
        from .linear import TransposedLinearRep, _bias_rep, _rows

        (call,) = calls
        m, info = call.module, call.info
        a, d = _rows(call.args[0], call.grads[0], call.batch_axis, batch_size, m)
        if info["weight"] is not None:
            rep = LinearRep(a, d) if info["layout"] == "out_in" else TransposedLinearRep(a, d)
            yield getattr(m, info["weight"]), rep
        if info["bias"] is not None:
            yield getattr(m, info["bias"]), _bias_rep(d)


MATMUL = MatmulRule()


class _Watch(TorchFunctionMode):
    """Replaces the watched parameters by recorded views widened to the batch in broadcasting ops,
    and records the linear maps they define in matrix products.

    params: id -> (parameter name, tensor, layout): the parameter itself and the views derived
    from it, "same" (its elements in its order) or "transposed" (the transpose of a matrix)."""

    def __init__(self, module: nn.Module, recorder, params: dict[int, tuple[str, Tensor, str]]):
        super().__init__()
        self.module, self.rec, self.params = module, recorder, params
        self.axis = recorder.axis_of(module)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        hits = [i for i, a in enumerate(args) if id(a) in self.params and a is self.params[id(a)][1]]
        nested = any(isinstance(a, (list, tuple)) and any(id(x) in self.params for x in a) for a in args)
        hit_kw = [k for k, v in kwargs.items() if id(v) in self.params]
        if not hits and not nested and not hit_kw:
            return func(*args, **kwargs)
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        plain = not nested and not hit_kw
        if plain and hits == [0] and (func in _SAME_ORDER or func in _TRANSPOSE):
            return self._derived(func, args, kwargs)
        if plain and func in _MATMUL and self._linear_map(func, args, hits):
            return self._record_linear(func, args, kwargs, hits)
        layouts = [self.params[id(args[i])][2] for i in hits]
        if not plain or not self._supported(func, hits) or any(lay != "same" for lay in layouts):
            out = func(*args, **kwargs)
            if not any(isinstance(x, Tensor) for x in tree_flatten(out)[0]):
                return out  # a query of metadata (shape, dtype, dim)
            names = [self.params[id(args[i])][0] for i in hits] + [self.params[id(kwargs[k])][0] for k in hit_kw]
            name = names[0] if names else "a parameter"
            self._refuse(f"{name} enters {getattr(func, '__name__', func)}, which does not broadcast it over the batch")
        shape = self._output_shape(func, args, kwargs)
        args = list(args)
        for i in hits:
            name, p, _ = self.params[id(args[i])]
            args[i] = self._widened(name, p, shape, func)  # p may be a view of the parameter
        return func(*args, **kwargs)

    def _derived(self, func, args, kwargs):
        """A view or cast of a watched tensor, watched with its layout (elements in the same order,
        or a matrix transposed; anything else is watched as unusable)."""
        name, src, layout = self.params[id(args[0])]
        out = func(*args, **kwargs)
        if not isinstance(out, Tensor):
            return out
        if func in _TRANSPOSE:
            layout = {"same": "transposed", "transposed": "same"}.get(layout, layout) if src.dim() == 2 else "other"
        elif out.numel() != src.numel():
            layout = "other"
        elif layout == "transposed" and out.shape != src.shape:
            layout = "other"
        self.params[id(out)] = (name, out, layout)
        return out

    def _linear_map(self, func, args, hits: list[int]) -> bool:
        """x @ W, x @ W.T or linear(x, W[, b]): the input x is not watched, W is a watched matrix."""
        if 0 in hits or not isinstance(args[0], Tensor) or args[0].dim() < 2 or args[0].dim() <= self.axis:
            return False
        if func is F.linear:
            w = args[1] if len(args) > 1 else None
            ok_w = w is None or 1 not in hits or (w.dim() == 2 and self.params[id(w)][2] == "same")
            ok_b = 2 not in hits or self.params[id(args[2])][2] == "same"
            return ok_w and ok_b and bool(hits)
        w = args[1]
        return hits == [1] and w.dim() == 2 and self.params[id(w)][2] in ("same", "transposed")

    def _record_linear(self, func, args, kwargs, hits: list[int]):
        out = func(*args, **kwargs)
        if func is F.linear:
            weight = self.params[id(args[1])][0] if 1 in hits else None
            bias = self.params[id(args[2])][0] if 2 in hits else None
            layout = "out_in"
        else:  # x @ W: W is (I, O), or W.T with the parameter (O, I)
            weight, bias = self.params[id(args[1])][0], None
            layout = "out_in" if self.params[id(args[1])][2] == "transposed" else "in_out"
        info = {"weight": weight, "bias": bias, "layout": layout}
        return self.rec.record(self.module, MATMUL, (args[0],), {}, out, self.axis, info=info)

    def _supported(self, func, hits: list[int]) -> bool:
        if func in _ELEMENTWISE:
            return True
        if func in _INPLACE:
            return 0 not in hits
        return func in _EXPAND and hits == [0]

    def _output_shape(self, func, args, kwargs) -> torch.Size:
        if func in _EXPAND:
            p = args[0]
            if func is _T.expand_as:
                return args[1].shape
            sizes = args[1:] if func is _T.expand else args[1:2]
            if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
                sizes = tuple(sizes[0])
            if not sizes:
                sizes = tuple(kwargs.get("size", kwargs.get("shape", ())))
            lead = len(sizes) - p.dim()
            return torch.Size(p.shape[j - lead] if s == -1 else int(s) for j, s in enumerate(sizes))
        if func in _INPLACE:
            return args[0].shape
        return torch.broadcast_shapes(*(a.shape for a in args if isinstance(a, Tensor)))

    def _widened(self, name: str, p: Tensor, shape: torch.Size, func) -> Tensor:
        axis, B = self.axis, self.rec.batch_size_hint
        r = len(shape)
        if r <= axis or r < p.dim():
            self._refuse(
                f"{name} enters {func.__name__} with an output of shape {tuple(shape)} without a batch axis {axis}"
            )
        aligned = p.reshape((1,) * (r - p.dim()) + tuple(p.shape))
        B = shape[axis] if B is None else B
        if aligned.shape[axis] != 1 or shape[axis] != B:
            self._refuse(
                f"{name} (shape {tuple(p.shape)}) enters {func.__name__} with an output of shape "
                f"{tuple(shape)}: it is not broadcast over a batch of {B} on axis {axis}"
            )
        widened = aligned.expand(*aligned.shape[:axis], B, *aligned.shape[axis + 1 :])
        return self.rec.parameter(self.module, name, widened, axis)

    def _refuse(self, reason: str):
        if self.rec.plan.fallback:
            raise NeedsFallback(self.module, reason)
        name = next((n for n, m, _, _ in self.rec.plan.entries if m is self.module), "")
        raise UnsupportedModuleError(
            f"module {name or '<root>'} ({type(self.module).__name__}) uses its own parameter in a way the per-sample capture cannot split by "
            f"sample ({reason}); pass fallback=True to handle the module with torch.func, or register a rule"
        )


BARE_PARAMETERS = BareParameterRule()
