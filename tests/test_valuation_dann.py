"""In-run valuation inside DANN's training: DANN(value_examples=True) gives every source and
target example -η <g_i, ∇L_val> per step, g_i its share of the reversed step gradient; checked
against an independent per-example autograd computation that applies the reversal by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from tlkernels.adaptation import DANN
from tlkernels.adaptation.dann import domain_head
from tlkernels.nn import dann_lambda

N_SOURCE, N_TARGET, N_VAL, LR = 11, 7, 5, 0.05


def _extractor():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.GroupNorm(1, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 6), nn.Tanh()
    )


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    xs, xt, xv = (torch.randn(n, 1, 6, 6, generator=g, dtype=dtype) for n in (N_SOURCE, N_TARGET, N_VAL))
    ys, yv = torch.randint(0, 3, (N_SOURCE,), generator=g), torch.randint(0, 3, (N_VAL,), generator=g)
    return xs, ys, xt, xv, yv


def _dann(**kw):
    torch.manual_seed(0)
    ext, cls, head = _extractor().double(), nn.Linear(6, 3).double(), domain_head(6, 10).double()
    args = dict(
        classifier=cls,
        domain_head=head,
        n_classes=3,
        optimizer="sgd",
        lr=LR,
        lr_anneal=False,
        batch_size=32,
        gamma=3.0,
        random_state=0,
    )
    return DANN(ext, **{**args, **kw})


def _reference_step_values(model, xs, ys, xt, xv, yv, lam):
    """-lr <g_i, ∇L_val> for every source then target example at the model's parameters, with the
    reversal applied by hand: g_i = ∇(ce_i / N) + ∇_classifier and, for the extractor, -lam times
    the domain share's gradient (the domain head does not reach L_val)."""
    ext, cls, head = model.extractor, model.classifier, model.adversary.head
    shared = list(ext.parameters()) + list(cls.parameters())
    g_val = torch.autograd.grad(F.cross_entropy(cls(ext(xv)), yv), shared)
    out = []
    for r in range(N_SOURCE + N_TARGET):
        x = (xs if r < N_SOURCE else xt)[r % N_SOURCE if r < N_SOURCE else r - N_SOURCE][None]
        dom = torch.tensor([0.0 if r < N_SOURCE else 1.0], dtype=x.dtype)
        bce = F.binary_cross_entropy_with_logits(head(ext(x)).reshape(1), dom)[()] / (
            2 * (N_SOURCE if r < N_SOURCE else N_TARGET)
        )
        g_dom = torch.autograd.grad(bce, list(ext.parameters()))
        s = -lam * sum((a * b).sum() for a, b in zip(g_dom, g_val))
        if r < N_SOURCE:
            ce = F.cross_entropy(cls(ext(x)), ys[r : r + 1]) / N_SOURCE
            s = s + sum((a * b).sum() for a, b in zip(torch.autograd.grad(ce, shared), g_val))
        out.append(-LR * float(s))
    return np.array(out)


def test_dann_values_equal_per_example_autograd_with_the_reversal():
    xs, ys, xt, xv, yv = _data()
    # one step per epoch (batch >= N, every target example in it): step k runs at progress (k-1)/2
    est = _dann(epochs=2, value_examples=True, snapshot_epochs=[1]).fit(xs, ys, xt, X_val=xv, y_val=yv)
    start = _dann(epochs=1, lr=0.0).fit(xs, ys, xt)  # the same initial parameters, never moved
    after_one = _dann(epochs=1).fit(xs, ys, xt)
    after_one.model_.load_state_dict(est.snapshots_[1])
    expected = _reference_step_values(start.model_, xs, ys, xt, xv, yv, float(dann_lambda(0.0, 1.0, 3.0)))
    expected += _reference_step_values(after_one.model_, xs, ys, xt, xv, yv, float(dann_lambda(0.5, 1.0, 3.0)))
    got = np.concatenate([est.source_values_, est.target_values_])
    assert got.dtype == np.float64 and est.source_values_.shape == (N_SOURCE,)
    assert est.target_values_.shape == (N_TARGET,)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-14)
    assert np.abs(est.target_values_).max() > 0  # the reversed domain share reaches L_val


def test_dann_value_examples_trains_the_same_parameters():
    xs, ys, xt, xv, yv = _data()
    for opt in ("sgd", "adam"):
        plain = _dann(epochs=2, optimizer=opt, batch_size=4).fit(xs, ys, xt)
        valued = _dann(epochs=2, optimizer=opt, batch_size=4, value_examples=True).fit(xs, ys, xt, X_val=xv, y_val=yv)
        for p, q in zip(plain.model_.parameters(), valued.model_.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
        for a, b in zip(plain.history_, valued.history_):
            assert a["class_loss"] == pytest.approx(b["class_loss"], rel=1e-10)
            assert a["domain_loss"] == pytest.approx(b["domain_loss"], rel=1e-10)
            assert a["domain_acc"] == pytest.approx(b["domain_acc"])


def test_dann_values_flag_mislabelled_source_examples():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(3, 8, generator=g) * 2.5
    ys = torch.randint(0, 3, (240,), generator=g)
    xs = centres[ys] + torch.randn(240, 8, generator=g)
    yt = torch.randint(0, 3, (200,), generator=g)
    xt = centres[yt] + 0.5 + torch.randn(200, 8, generator=g)
    flip = torch.rand(240, generator=g) < 0.25
    noisy = torch.where(flip, (ys + 1) % 3, ys)
    est = DANN(n_classes=3, epochs=6, batch_size=32, value_examples=True, random_state=0)
    est.fit(xs, noisy, xt[100:], X_val=xt[:60], y_val=yt[:60])
    auroc = roc_auc_score(flip.numpy(), est.source_values_)
    assert auroc > 0.8, auroc  # 1.0 measured; a flipped label raises the clean validation loss: a positive value


def test_dann_value_examples_errors_name_the_argument():
    xs, ys, xt, xv, yv = _data()
    with pytest.raises(ValueError, match="X_val and y_val"):
        _dann(value_examples=True).fit(xs, ys, xt)
    with pytest.raises(ValueError, match="value_examples=True"):
        _dann().fit(xs, ys, xt, X_val=xv, y_val=yv)
    with pytest.raises(ValueError, match="grad_clip=None"):
        _dann(value_examples=True, grad_clip=1.0).fit(xs, ys, xt, X_val=xv, y_val=yv)
    with pytest.raises(ValueError, match="X_val must have the feature shape"):
        _dann(value_examples=True).fit(xs, ys, xt, X_val=xv[:, :, :5], y_val=yv)
    with pytest.raises(ValueError, match="y_val must lie in"):
        _dann(value_examples=True).fit(xs, ys, xt, X_val=xv, y_val=yv + 3)
