"""Which source data helps: SOSELETO (bilevel example weighting) and, later, the dataserver."""

from .soseleto import Soseleto

__all__ = ["Soseleto"]
