"""Data valuation and selection on the per-sample gradient products of ``tlkernels.persample``.

- ``InRun``: first-order in-run data Shapley (Wang et al., 2024) as the backward of any training
  step (``InRun.step(batch, index)``) or an optimizer wrapper (``InRun.wrap(optimizer)``);
- ``TracIn``: TracInCP (Pruthi et al., 2020) over checkpoints: self-influence, influence on test
  examples, proponents and opponents;
- ``gradient_similarity``: LESS-style (Xia et al., 2024) selection by the cosine of (Adam-
  preconditioned, randomly projected) source gradients with the target's, and ``select_budget``;
- ``GREATS`` / ``select_batch``: online batch selection (Wang et al., 2024), greedy with the Gram
  term for redundancy.

Every method takes loss_fn(model, batch) -> per-sample losses (B,), as ``tlkernels.persample``.
"""

from .greats import GREATS, batch_objective, select_batch
from .inrun import InRun, ValuedOptimizer
from .similarity import adam_preconditioner, gradient_similarity, project, select_budget
from .tracin import TracIn, proponents_opponents

__all__ = [
    "GREATS",
    "InRun",
    "TracIn",
    "ValuedOptimizer",
    "adam_preconditioner",
    "batch_objective",
    "gradient_similarity",
    "project",
    "proponents_opponents",
    "select_batch",
    "select_budget",
]
