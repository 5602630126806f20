"""The dataserver experiment (Yan et al. 2020) on offline data.

The server's store holds four sources of 8x8 grey images: digits 0-4 (labelled), a pool of
digits 5-9 kept away from the client (unlabelled), patches cut from scikit-learn's two sample
photographs, and smoothed noise. The client holds digits 5-9, 20 labelled per class, and a test
split disjoint from the server's pool. Every method pre-trains the same small CNN by rotation
prediction on what it gets from the server, then fine-tunes it on the client's labels; the
methods (none, full, uniform, Ngiam et al. 2018, ours with rotation or probe scores), the
selection precision and the proxy A-distance check are ``dataserver_compare``'s, the training
``dataserver_recipe``'s (shared with the 32x32x3 digit domains of ``dataserver_digits``).
"""

from __future__ import annotations

import os
import tempfile
import time

from ..data import class_split, load_digits, stratified_split
from ..selection.dataserver import Store, partition_store, train_experts
from ..selfsup import SmallCNN
from .dataserver_compare import METHODS, compare_methods
from .dataserver_recipe import Recipe
from .dataserver_sources import image_patches, smooth_noise

__all__ = ["build_offline_store", "image_patches", "recipe_8x8", "run_dataserver_experiment", "smooth_noise"]

RELEVANT = ("digits_0_4", "digits_5_9_pool")


def build_offline_store(
    root: str, seed: int = 0, k: int = 8, expert_epochs: int = 3, verbose: bool = False, overwrite: bool = False
):
    """Writes the experiment's store (partitioned, with experts) and returns (store, client data):
    client = (target train Dataset (20 per class, labels 0-4 for digits 5-9), test Dataset).
    A non-empty `root` is refused (FileExistsError) unless overwrite=True."""
    if os.path.isdir(root) and os.listdir(root) and not overwrite:  # before the minutes of training
        raise FileExistsError(f"root {root!r} exists and is not empty (pass overwrite=True to replace it)")
    digits = load_digits(images=True)
    low = class_split(digits, range(5))
    high = class_split(digits, range(5, 10))
    test, target, pool = stratified_split(high, [350, 100, None], random_state=seed)
    store = Store.create(
        root,
        {
            "digits_0_4": (low.X, low.y),
            "digits_5_9_pool": (pool.X, None),
            "photo_patches": (image_patches(1500, seed=seed), None),
            "smooth_noise": (smooth_noise(1000, seed=seed), None),
        },
        overwrite=overwrite,
    )
    partition_store(store, k, seed=seed, epochs=3, verbose=verbose)
    train_experts(store, epochs=expert_epochs, seed=seed, verbose=verbose)
    return store, target, test


def recipe_8x8(pretrain_epochs: int = 4) -> Recipe:
    """The 8x8 experiment's training: SmallCNN (1 channel), the fine-tuning grid lr in {0.01,
    0.05} x steps in {150, 400}, batches of 32."""
    return Recipe(make_net=lambda n_outputs: SmallCNN(n_outputs=n_outputs), pretrain_epochs=pretrain_epochs)


def run_dataserver_experiment(
    seed: int = 0, pretrain_epochs: int = 4, k: int = 8, store_dir: str | None = None, verbose: bool = False
) -> dict:
    """The table's row values for one seed: accuracy per method, selection precision, seconds
    (see ``compare_methods``)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = store_dir or os.path.join(tmp, "store")
        store, target, test = build_offline_store(root, seed=seed, k=k, verbose=verbose, overwrite=store_dir is None)
        val, tr = stratified_split(target, [25, None], random_state=seed + 1)
        out = compare_methods(
            store, tr, val, test, 5, RELEVANT, recipe_8x8(pretrain_epochs), seed=seed, methods=METHODS, verbose=verbose
        )
        out["seconds"]["total"] = time.perf_counter() - t0
        return {"experiment": "dataserver", "seed": seed, "k": k, "store_size": store.size, **out}
