"""Per-sample gradient products for whole models, without per-sample gradients.

One forward and one backward of the UNWEIGHTED per-sample losses record, for every use of a
trainable parameter, the layer's inputs and the gradient of the summed losses with respect to its
output. From these:

- ``Capture.dot(vectors)``: s_i = sum_p <dl_i/dp, v_p> (SOSELETO's Q^T g), at about the cost of one
  extra layer forward per layer (the fused ``ghost_dot`` op for linear maps, the layer's own
  convolution for convolutions); ``grad_dot`` streams it during the backward;
- ``Capture.gram(other)`` and ``Capture.norms()``: Grams and squared norms, per layer choosing
  between the ghost form and materialising that layer's per-sample gradients by cost;
- ``Capture.accumulate_grad(weights)``: writes sum_i w_i dl_i/dp into ``p.grad`` without a second
  backward.

Which layers, and how: one rule per kind of layer (``rules/``), registered in the manner of
Opacus' grad samplers: Linear (any leading dims), transformers' Conv1D, Conv1d/2d/3d, Embedding,
LayerNorm, RMSNorm, GroupNorm, eval-mode BatchNorm, nn.MultiheadAttention (decomposed: every
option), nn.RNN / LSTM / GRU (decomposed: layers, bidirectional, every output), tied weights, and a
module's own matrices used as linear maps (``x @ W``, ``x @ W.T``, ``F.linear``).
The batch axis is known from the model (``batch_first`` of torch's sequence modules, or
``batch_axes=``), never guessed from sizes; an input of batch size 1 shared by the batch (a
(1, T) position index) is widened to the batch. Parameters a module uses itself (a ViT's class
token and position embedding, a layer scale) are recorded at the op that broadcasts them over the
batch. Modules whose parameters cannot be split that way go through a torch.func fallback,
announced once per model (``PerSampleFallbackWarning``), or are refused by name
(``fallback=False``). Every structure is checked once against the invariant of ``verify``.
See docs/persample.md.
"""

from . import rules  # noqa: F401  (registers the built-in rules)
from .capture import Capture, LossFn, capture
from .functional import grad_dot, grad_gram, grad_norms
from .invariant import PerSampleCheckError, PerSampleFallbackWarning, verify
from .registry import LayerCall, Rule, UnsupportedModuleError, register_rule, rule_for

__all__ = [
    "Capture",
    "LayerCall",
    "LossFn",
    "PerSampleCheckError",
    "PerSampleFallbackWarning",
    "Rule",
    "UnsupportedModuleError",
    "capture",
    "grad_dot",
    "grad_gram",
    "grad_norms",
    "register_rule",
    "rule_for",
    "verify",
]
