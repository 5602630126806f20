"""In-run valuation inside the library's own training: FineTune(value_examples=True)."""

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from tlkernels.transfer import FineTune
from tlkernels.valuation import InRun


def _noisy_digits(seed=0, n_train=600, n_val=200, noise=0.3):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    tr, va = order[:n_train], order[n_train : n_train + n_val]
    y_noisy = y[tr].copy()
    flip = rng.random(n_train) < noise
    y_noisy[flip] = (y_noisy[flip] + rng.integers(1, 10, flip.sum())) % 10
    return X[tr], y_noisy, flip, X[va], y[va]


def test_finetune_values_flag_mislabelled_examples():
    X, y, flipped, Xv, yv = _noisy_digits()
    est = FineTune(epochs=8, lr=1e-3, value_examples=True, random_state=0).fit(X, y, X_val=Xv, y_val=yv)
    v = est.example_values_
    assert v.shape == (len(y),) and v.dtype == np.float64 and np.isfinite(v).all()
    # a mislabelled example pushes the clean validation loss up: a positive (harmful) value
    auroc = roc_auc_score(flipped, v)
    assert auroc > 0.65, auroc  # 0.71 measured (chance: 0.5)


def test_train_loop_values_equal_a_hand_written_inrun_loop():
    """train_loop(value_on=...) (what FineTune runs) gives InRun's values step for step."""
    from tlkernels.transfer._common import train_loop

    X, y, _, Xv, yv = _noisy_digits(n_train=96, n_val=40)
    Xt, yt, Xvt, yvt = map(torch.as_tensor, (X, y, Xv, yv))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    hand = copy.deepcopy(net)
    values = torch.zeros(len(y), dtype=torch.float64)
    train_loop(net, [{"params": list(net.parameters()), "lr": 1e-2}], Xt, yt, epochs=2, batch_size=32,
               optimizer="sgd", gen=torch.Generator().manual_seed(3), device="cpu", value_on=(Xvt, yvt),
               values=values)  # fmt: skip

    opt = torch.optim.SGD(hand.parameters(), lr=1e-2, momentum=0.9)
    ce = torch.nn.functional.cross_entropy
    inrun = InRun(hand, lambda m, b: ce(m(b[0]), b[1], reduction="none"), (Xvt, yvt), optimizer=opt)
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 32):
            idx = perm[i : i + 32]
            opt.zero_grad(set_to_none=True)
            inrun.step((Xt[idx], yt[idx]), idx)
            opt.step()
    torch.testing.assert_close(values, inrun.values, rtol=1e-5, atol=1e-12)
    for p, q in zip(net.parameters(), hand.parameters()):
        torch.testing.assert_close(p, q)


def test_finetune_value_examples_needs_a_validation_set_and_no_weights():
    X, y, _, Xv, yv = _noisy_digits(n_train=64, n_val=16)
    with pytest.raises(ValueError, match="X_val and y_val"):
        FineTune(epochs=1, value_examples=True).fit(X, y)
    with pytest.raises(ValueError, match="sample_weight=None"):
        FineTune(epochs=1, value_examples=True).fit(X, y, sample_weight=np.ones(len(y)), X_val=Xv, y_val=yv)
