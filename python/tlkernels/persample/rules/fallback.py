"""The fallback for modules no rule handles: per-sample gradients of the module's own parameters
with torch.func, for each sample the gradient of <module_p(x_i), dy_i> with respect to p.

The module is re-run under vmap on its recorded inputs (positional and keyword); a tensor input
is split by the batch when its batch axis has the batch size, and passed whole otherwise (masks
shared by the batch). Which axis of each output holds the batch is read from one probe call on
the first sample (an output whose batch size changes from B to 1), so outputs that hold the batch
elsewhere (an LSTM's h_n) are split correctly. Exact, but it costs a per-sample forward and
backward of the module (materialised per-sample gradients): the capture announces it once.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..engine import own_trainable
from ..registry import LayerCall, Rule, UnsupportedModuleError
from ..reps import DenseRep


class FallbackRule(Rule):
    fallback_reason = "no per-sample rule for this module type: torch.func per-sample gradients (vmap)"

    def representations(self, calls: list[LayerCall], batch_size: int):
        from torch.func import functional_call, grad, vmap

        (call,) = calls
        m, axis = call.module, call.batch_axis
        own = own_trainable(m)
        if not own:
            return
        leaves, spec = tree_flatten((call.args, call.kwargs))
        split = [
            i for i, x in enumerate(leaves) if isinstance(x, Tensor) and x.dim() > axis and x.shape[axis] == batch_size
        ]
        if not split:
            raise UnsupportedModuleError(
                f"{type(m).__name__}: none of its inputs has the batch size {batch_size} on axis {axis}; "
                "the fallback cannot split it by sample"
            )
        params = {n: p.detach() for n, p in own.items()}

        def run(params, pieces):
            args = list(leaves)
            for i, piece in zip(split, pieces):
                args[i] = piece.unsqueeze(axis)
            a, kw = tree_unflatten(args, spec)
            return [o for o in tree_flatten(functional_call(m, params, tuple(a), kw))[0] if isinstance(o, Tensor)]

        with torch.no_grad():
            probe = run(params, [leaves[i].select(axis, 0) for i in split])
        out_axes = []
        for (shape, _, _), p in zip(call.output_meta, probe):
            dims = [d for d in range(len(shape)) if shape[d] == batch_size and p.shape[d] == 1]
            if not dims and batch_size != 1:
                raise UnsupportedModuleError(
                    f"{type(m).__name__}: an output of shape {tuple(shape)} does not hold the batch on any axis; "
                    "the fallback cannot split its gradient by sample"
                )
            out_axes.append(dims[0] if dims else 0)
        dys = [g.movedim(a, 0) for g, a in zip(call.grads, out_axes)]

        def contribution(params, pieces, dys_i):
            outs = run(params, pieces)
            return sum((o * d.unsqueeze(a)).sum() for o, d, a in zip(outs, dys_i, out_axes))

        per_sample = vmap(grad(contribution), in_dims=(None, axis, 0))(params, [leaves[i] for i in split], dys)
        for n, p in own.items():
            yield p, DenseRep(per_sample[n])


FALLBACK = FallbackRule()
