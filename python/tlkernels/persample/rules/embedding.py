"""nn.Embedding (padding_idx; an index shared by the batch, such as (1, T) positions, is widened
to the batch during the forward)."""

from __future__ import annotations

from torch import nn

from ..batch_axis import to_batch_first
from ..registry import LayerCall, Rule, UnsupportedModuleError, register_rule
from ..reps import EmbeddingRep


class EmbeddingRule(Rule):
    broadcasts = True

    def check(self, module: nn.Module, name: str) -> None:
        if module.max_norm is not None or module.scale_grad_by_freq or module.sparse:
            raise UnsupportedModuleError(
                f"module {name or '<root>'}: Embedding with max_norm / scale_grad_by_freq / sparse is not supported "
                "by the per-sample capture"
            )

    def representations(self, calls: list[LayerCall], batch_size: int):
        (call,) = calls
        m = call.module
        if not m.weight.requires_grad:
            return
        idx = to_batch_first(call.args[0], call.batch_axis, batch_size, m).reshape(batch_size, -1)
        dy = to_batch_first(call.grads[0], call.batch_axis, batch_size, m, "an output gradient")
        yield (
            m.weight,
            EmbeddingRep(
                idx,
                dy.reshape(batch_size, idx.shape[1], -1),
                m.num_embeddings,
                m.padding_idx,
            ),
        )


register_rule(nn.Embedding, EmbeddingRule())
