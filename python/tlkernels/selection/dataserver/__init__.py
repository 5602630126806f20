"""The dataserver of self-supervised experts (Yan et al. 2020, "What data is useful for my data"):
a store of source data partitioned by k-means, one rotation-prediction expert per partition,
a client that scores the experts on its own data, and budgeted sampling (OutputData)."""

from .client import DataServerClient, fast_adapt_scores
from .experts import load_expert, partition_store, train_experts
from .sampling import output_data, selection_probabilities
from .store import Store

__all__ = [
    "DataServerClient",
    "Store",
    "create_app",
    "fast_adapt_scores",
    "load_expert",
    "output_data",
    "partition_store",
    "selection_probabilities",
    "serve",
    "train_experts",
]


def __getattr__(name):  # the service needs fastapi; import it only when asked for
    if name in ("create_app", "serve"):
        from . import service

        return getattr(service, name)
    raise AttributeError(name)
