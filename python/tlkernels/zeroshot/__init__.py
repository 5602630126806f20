"""Zero-shot learning (Lampert 2019; Lee 2016): classify classes never seen in training from a
class-attribute table.

- ``DIGIT_ATTRIBUTES`` / ``ATTRIBUTE_NAMES``: a hand-written attribute table for the 10 digits.
- ``DAP``: Direct Attribute Prediction (per-attribute classifiers + the probabilistic rule).
- ``BilinearCompatibility``, ``ZeroShotHingeLoss``, ``EmbeddingZeroShot``: F(v, w) = v^T M w
  trained with the ranking hinge of margin k.
- ``ConSE``: convex combination of the semantic embeddings of the top-T seen predictions.
"""

from .attributes import ATTRIBUTE_NAMES, DIGIT_ATTRIBUTES
from .conse import ConSE
from .dap import DAP
from .embedding import (
    BilinearCompatibility,
    EmbeddingZeroShot,
    ZeroShotHingeLoss,
    encode_classes,
)

__all__ = [
    "ATTRIBUTE_NAMES",
    "DAP",
    "DIGIT_ATTRIBUTES",
    "BilinearCompatibility",
    "ConSE",
    "EmbeddingZeroShot",
    "ZeroShotHingeLoss",
    "encode_classes",
]
