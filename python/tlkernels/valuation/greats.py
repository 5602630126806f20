"""Online batch selection, as in GREATS (Wang et al., 2024).

From a candidate batch, pick the k examples whose SGD step, θ' = θ - η Σ_{i∈S} w ∇l_i with
w = 1/k, most lowers the validation loss to second order with the Hessian taken as the identity:

    f(S) = η w Σ_{i∈S} s_i - (η w)² / 2 · Σ_{i,j∈S} G_ij,
    s_i = <∇l_i, ∇L_val>,  G_ij = <∇l_i, ∇l_j>,

so -f(S) is the predicted change of L_val. The Gram term penalises redundant examples (two
aligned gradients move θ twice as far in one direction). Greedy adds, k times, the example with
the largest marginal gain f(S ∪ {i}) - f(S) = η w s_i - (η w)² (Σ_{j∈S} G_ij + G_ii / 2); GREATS
drops the G_ii / 2 term, kept here so that the greedy maximises exactly the f above. On small
candidate sets ``method="exhaustive"`` maximises f over every subset of size k.

``GREATS.step(candidates, k)`` selects and then writes the selected examples' mean-loss gradient
into ``.grad`` from the same capture: one forward and one backward of the candidates and one of
the validation batch.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor, nn

from .. import persample
from ._batches import batch_size
from ._grads import LossFn, learning_rates
from ._products import val_products

__all__ = ["GREATS", "batch_objective", "select_batch"]


def batch_objective(s: Tensor, gram: Tensor, subset: Tensor, step: float) -> Tensor:
    """f(S) = step Σ_{i∈S} s_i - step² / 2 Σ_{i,j∈S} G_ij for index tensor `subset` (step = η w)."""
    sub = subset.to(torch.long)
    return step * s[sub].sum() - 0.5 * step * step * gram[sub][:, sub].sum()


def _check(s: Tensor, gram: Tensor, k: int) -> int:
    if not isinstance(s, Tensor) or s.dim() != 1:
        raise ValueError("s must be a (B,) tensor of <∇l_i, ∇L_val>")
    b = s.shape[0]
    if not isinstance(gram, Tensor) or gram.shape != (b, b):
        raise ValueError(
            f"gram must be a (B, B) = ({b}, {b}) tensor, got "
            f"{tuple(gram.shape) if isinstance(gram, Tensor) else type(gram).__name__}"
        )
    if not isinstance(k, int) or not 1 <= k <= b:
        raise ValueError(f"k must be an int between 1 and the number of candidates ({b}), got {k!r}")
    return b


def select_batch(
    s: Tensor,
    gram: Tensor,
    k: int,
    lr: float,
    *,
    method: str = "greedy",
    max_subsets: int = 200_000,
) -> Tensor:
    """(k,) indices of the selected candidates, in the order chosen (greedy) or ascending (exhaustive).

    s: (B,) <∇l_i, ∇L_val>; gram: (B, B) <∇l_i, ∇l_j>; k: how many to select; lr: the step's η
    (the selected examples' loss is averaged, w = 1/k); method: "greedy" (GREATS) or "exhaustive"
    (every subset of size k, refused beyond max_subsets subsets). Ties go to the lower index.
    """
    b = _check(s, gram, k)
    step = float(lr) / k
    s64, g64 = s.detach().to(torch.float64).cpu(), gram.detach().to(torch.float64).cpu()
    if method == "exhaustive":
        count = math.comb(b, k)
        if count > max_subsets:
            raise ValueError(
                f"exhaustive selection of {k} of {b} candidates is {count} subsets, more than "
                f"max_subsets={max_subsets}; use method='greedy'"
            )
        best, best_f = None, -math.inf
        for sub in itertools.combinations(range(b), k):
            f = float(batch_objective(s64, g64, torch.tensor(sub), step))
            if f > best_f:
                best, best_f = sub, f
        return torch.tensor(best, dtype=torch.long)
    if method != "greedy":
        raise ValueError(f"method must be 'greedy' or 'exhaustive', got {method!r}")
    gain = step * s64 - 0.5 * step * step * g64.diagonal()
    chosen = torch.zeros(b, dtype=torch.bool)
    order = []
    for _ in range(k):
        i = int(torch.where(chosen, torch.tensor(-math.inf, dtype=torch.float64), gain).argmax())
        order.append(i)
        chosen[i] = True
        gain = gain - step * step * g64[:, i]
    return torch.tensor(order, dtype=torch.long)


class GREATS:
    """Online batch selection inside any training loop.

    Args:
        model, loss_fn: as for ``tlkernels.persample`` (loss_fn(model, batch) -> (B,) losses).
        val_batch: the validation (target) batch.
        optimizer / lr: the step's learning rate η (the optimizer's first group lr, or lr).
        method: "greedy" or "exhaustive" (see ``select_batch``).
        persample_options: passed to ``tlkernels.persample.capture``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        val_batch: Any,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float | None = None,
        method: str = "greedy",
        **persample_options,
    ):
        if optimizer is None and lr is None:
            raise ValueError("GREATS needs the step's learning rate: pass optimizer=... or lr=...")
        self.model, self.loss_fn, self.val_batch = model, loss_fn, val_batch
        self.val_size = batch_size(val_batch, "val_batch")
        self.optimizer, self.lr, self.method = optimizer, lr, method
        self.options = persample_options

    def _lr(self) -> float:
        rates = set(learning_rates(self.model, self.optimizer, self.lr).values()) - {0.0}
        if len(rates) > 1:
            raise ValueError("GREATS needs one learning rate for all parameters; pass lr=... explicitly")
        return rates.pop() if rates else 0.0

    def scores(self, candidates: Any):
        """(s (B,), gram (B, B), capture of the candidates): what ``select_batch`` needs, from one
        capture of the candidates and one of the validation batch."""
        b = batch_size(candidates, "candidates")
        cap = persample.capture(self.model, self.loss_fn, candidates, **self.options)
        if cap.batch_size != b:
            raise ValueError(f"loss_fn returned {cap.batch_size} losses for {b} candidates")
        cap_val = persample.capture(self.model, self.loss_fn, self.val_batch, **self.options)
        s = val_products(cap, cap_val, dict.fromkeys(cap.reps, 1.0))
        return s, cap.gram(), cap

    def step(self, candidates: Any, k: int) -> Tensor:
        """Selects k of the candidates (B) and adds the selected examples' mean-loss gradient to
        ``.grad`` (call ``optimizer.step()`` afterwards). Returns the (k,) selected indices."""
        b = batch_size(candidates, "candidates")
        s, gram, cap = self.scores(candidates)
        chosen = select_batch(s, gram, k, self._lr(), method=self.method)
        w = cap.losses.new_zeros(b)
        w[chosen.to(w.device)] = 1.0 / k
        cap.accumulate_grad(w)
        return chosen
