"""Known answers of multi-task sharing and context-conditioned models (tlkernels.multitask)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tlkernels.data import load_digits
from tlkernels.multitask import (
    ContextConcatNet,
    ContextualClassifier,
    HardSharingNet,
    MultiTaskClassifier,
    SoftSharingPenalty,
    WeightPredictingNet,
)

INF = float("inf")


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    d = load_digits(images=True)
    X, y = d.X[:300], d.y[:300]
    Y = {"identity": y, "parity": y % 2, "ge5": (y >= 5).long()}
    return X, y, Y


def _scalar_net(v: float) -> nn.Module:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(v)
    return m


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    pb = dict(b.named_parameters())
    return max(float((p - pb[n]).detach().abs().max()) for n, p in a.named_parameters())


# -- the penalty ---------------------------------------------------------------------------------
def test_penalty_on_hand_made_parameters():
    trunks = {"a": _scalar_net(0.0), "b": _scalar_net(1.0), "c": _scalar_net(3.0)}
    heads = [_scalar_net(2.0), _scalar_net(2.0), _scalar_net(-2.0)]
    # ordered pairs s != t: 2 * ((0-1)^2 + (0-3)^2 + (1-3)^2) = 28; heads: 2 * (0 + 16 + 16) = 64
    assert float(SoftSharingPenalty(lam=0.5)(trunks).detach()) == pytest.approx(14.0)
    assert float(SoftSharingPenalty(lam=0.5, mu=0.25)(trunks, heads).detach()) == pytest.approx(14.0 + 16.0)
    assert float(SoftSharingPenalty(0.0, 0.0)(trunks, heads)) == 0.0
    # gradient of lam * sum_{s!=t} (w_s - w_t)^2 w.r.t. w_a: lam * 4 * ((w_a - w_b) + (w_a - w_c)) = 0.5 * 4 * -4
    SoftSharingPenalty(lam=0.5)(trunks).backward()
    assert float(trunks["a"].weight.grad) == pytest.approx(-8.0)


def test_penalty_pairs_by_name_and_shape():
    a, b = nn.Linear(3, 2), nn.Linear(3, 4)
    with pytest.raises(ValueError, match="heads: parameter 'weight' has different shapes"):
        SoftSharingPenalty(mu=1.0)([nn.Linear(1, 1)] * 2, [a, b])
    c = nn.Linear(3, 2)
    with torch.no_grad():
        c.weight.copy_(a.weight + 1.0)
        c.bias.copy_(a.bias)
    # 'skip' compares only the two heads of shape (2, 3): 2 * 6 entries * 1^2
    pen = SoftSharingPenalty(mu=1.0, mismatched="skip")([nn.Linear(1, 1)] * 3, [a, b, c])
    assert float(pen.detach()) == pytest.approx(12.0)
    with pytest.raises(ValueError, match="trunks: module 1 has parameters"):
        SoftSharingPenalty(lam=1.0)([nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2))])
    with pytest.raises(ValueError, match="lam must be a finite number"):
        SoftSharingPenalty(lam=-1.0)


def test_hard_sharing_net_runs_trunk_once_per_task_heads():
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
    net = HardSharingNet(trunk, {"a": nn.Linear(8, 3), "b": nn.Linear(8, 2)})
    out = net(torch.rand(5, 1, 8, 8))
    assert list(out) == ["a", "b"] and out["a"].shape == (5, 3) and out["b"].shape == (5, 2)
    with pytest.raises(ValueError, match="heads: task names"):
        HardSharingNet(trunk, {"a.b": nn.Linear(8, 2)})


# -- the limits of soft sharing -------------------------------------------------------------------
def test_soft_sharing_lambda_infinite_equals_hard_sharing(digits):
    X, _, Y = digits
    kw = dict(hidden=(32,), epochs=4, batch_size=50, random_state=3)
    hard = MultiTaskClassifier("hard", **kw).fit(X, Y)
    soft = MultiTaskClassifier("soft", lam=INF, mu=0.0, **kw).fit(X, Y)
    for t in Y:  # the tied copies stay bit-identical and equal the hard-sharing trunk up to summation order
        assert _max_diff(soft.model_.trunks[t], soft.model_.trunks["identity"]) == 0.0
        assert _max_diff(soft.model_.trunks[t], hard.model_.trunk) < 1e-4
        assert _max_diff(soft.model_.heads[t], hard.model_.heads[t]) < 1e-4
    ph, ps = hard.predict(X.numpy()), soft.predict(X.numpy())  # numpy in, numpy out
    for t in Y:
        assert (ph[t] == ps[t]).mean() > 0.99
    assert hard.history_[-1]["loss"] == pytest.approx(soft.history_[-1]["loss"], rel=1e-4)


def test_large_lambda_approaches_hard_sharing(digits):
    """Finite lam: the trunks' distance to the hard-sharing trunk shrinks as lam grows (SGD, the
    penalty's stiffness lr * 4 T lam kept below 2 for stability)."""
    X, _, Y = digits
    kw = dict(hidden=(32,), epochs=3, batch_size=50, optimizer="sgd", lr=0.01, random_state=1)
    hard = MultiTaskClassifier("hard", **kw).fit(X, Y).model_.trunk
    d = []
    for lam in (0.0, 1.0, 10.0):
        soft = MultiTaskClassifier("soft", lam=lam, **kw).fit(X, Y)
        d.append(np.mean([_max_diff(soft.model_.trunks[t], hard) for t in Y]))
    assert d[0] > d[1] > d[2]


def test_lambda_mu_zero_equals_separate_training(digits):
    X, _, Y = digits
    Y = dict(Y)
    Y["parity"] = Y["parity"].clone()
    Y["parity"][::3] = -1  # tasks need not be labelled on the same images
    kw = dict(hidden=(32,), epochs=4, batch_size=50, random_state=5)
    soft = MultiTaskClassifier("soft", lam=0.0, mu=0.0, **kw).fit(X, Y)
    sep = MultiTaskClassifier("separate", **kw).fit(X, Y)
    for t in Y:
        alone = MultiTaskClassifier("separate", **kw).fit(X, {t: Y[t]})
        # the same network from the same init on the same batches; only Adam's eps sees the 1/T loss scale
        assert _max_diff(alone.model_.trunks[t], sep.model_.trunks[t]) < 1e-5
        assert _max_diff(alone.model_.trunks[t], soft.model_.trunks[t]) < 1e-3
        assert (alone.predict(X.numpy())[t] == soft.predict(X.numpy())[t]).mean() > 0.99


def test_multitask_learns_and_scores_per_task(digits):
    X, y, Y = digits
    est = MultiTaskClassifier("hard", hidden=(64,), epochs=30, random_state=0).fit(
        X[:200], {t: v[:200] for t, v in Y.items()}
    )
    s = est.score(X[200:], {t: v[200:] for t, v in Y.items()})
    assert set(s) == set(Y) and s["identity"] > 0.7 and s["parity"] > 0.7
    assert est.n_classes_ == {"identity": 10, "parity": 2, "ge5": 2}
    proba = est.predict_proba(X[:7])
    assert proba["identity"].shape == (7, 10) and np.allclose(proba["parity"].sum(1), 1, atol=1e-5)
    # an (N, T) array works too; the tasks are then task0, task1, ...
    A = torch.stack([Y["identity"], Y["parity"]], 1)
    arr = MultiTaskClassifier("hard", hidden=(16,), epochs=1, random_state=0).fit(X, A)
    assert arr.tasks_ == ["task0", "task1"] and set(arr.score(X, A)) == {"task0", "task1"}


def test_task_and_sample_weights(digits):
    X, _, Y = digits
    kw = dict(hidden=(16,), epochs=2, random_state=0)
    # a zero task weight: the head of that task never moves from its initialisation
    a = MultiTaskClassifier("hard", task_weights={"ge5": 0.0}, **kw).fit(X, Y)
    b = MultiTaskClassifier("hard", epochs=0, hidden=(16,), random_state=0).fit(X, Y)
    assert _max_diff(a.model_.heads["ge5"], b.model_.heads["ge5"]) == 0.0
    assert _max_diff(a.model_.heads["parity"], b.model_.heads["parity"]) > 0
    # zero sample weights act like removing the labels
    w = np.ones(len(X))
    w[::2] = 0
    c = MultiTaskClassifier("hard", **kw).fit(X, Y, sample_weight={"parity": w})
    Yc = dict(Y)
    Yc["parity"] = Y["parity"].clone()
    Yc["parity"][::2] = -1
    d = MultiTaskClassifier("hard", **kw).fit(X, Yc)
    assert _max_diff(c.model_, d.model_) < 1e-5


def test_multitask_errors_name_arguments(digits):
    X, _, Y = digits
    with pytest.raises(ValueError, match=r"Y\['parity'\] must have shape \(300,\)"):
        MultiTaskClassifier().fit(X, {**Y, "parity": Y["parity"][:10]})
    with pytest.raises(ValueError, match="task_weights names unknown tasks"):
        MultiTaskClassifier(task_weights={"nope": 1.0}, epochs=0).fit(X, Y)
    with pytest.raises(ValueError, match="mode must be one of"):
        MultiTaskClassifier("shared")
    with pytest.raises(ValueError, match=r"Y\['ge5'\] has no labelled example"):
        MultiTaskClassifier().fit(X, {**Y, "ge5": torch.full((300,), -1)})
    est = MultiTaskClassifier(hidden=(8,), epochs=0, random_state=0).fit(X, Y)
    with pytest.raises(ValueError, match="Y names unknown tasks"):
        est.score(X, {"colour": Y["parity"]})
    with pytest.raises(ValueError, match="sample_weight names unknown tasks"):
        MultiTaskClassifier(epochs=0).fit(X, Y, sample_weight={"x": np.ones(300)})


# -- context-conditioned models -------------------------------------------------------------------
def test_weight_predicting_net_with_constant_beta_is_a_linear_head():
    torch.manual_seed(0)
    phi = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.ReLU())
    head = nn.Linear(6, 4)
    net = WeightPredictingNet(phi, 6, 2, 4, hyper_hidden=())
    with torch.no_grad():
        net.hyper[0].weight.zero_()
        net.hyper[0].bias.copy_(torch.cat([head.weight.flatten(), head.bias]))
    x, ctx = torch.rand(9, 1, 8, 8), torch.randn(9, 2)
    torch.testing.assert_close(net(x, ctx), head(phi(x)))
    W, b = net.weights(ctx)
    assert W.shape == (9, 4, 6) and b.shape == (9, 4)
    # a non-constant beta does depend on the context
    net2 = WeightPredictingNet(phi, 6, 2, 4)
    assert not torch.allclose(net2(x, ctx), net2(x, ctx + 1))


def test_concat_net_uses_context_at_input_or_hidden():
    torch.manual_seed(0)
    x = torch.rand(5, 1, 8, 8)
    for at in ("input", "hidden"):
        net = ContextConcatNet(64, 3, 10, hidden=(16, 8), at=at)
        c = torch.zeros(5, 3)
        assert net(x, c).shape == (5, 10)
        assert not torch.allclose(net(x, c), net(x, c + 1))
    with pytest.raises(ValueError, match="at must be"):
        ContextConcatNet(64, 3, 10, at="output")


def test_contextual_classifier_uses_the_context():
    """Labels permuted by the context (y' = 9 - y when mu = 1): without the context a model cannot beat
    ~50 %. Predicting the head from mu represents the permutation directly; concatenating mu to the
    input must learn the interaction in its hidden units, so it is slower (as measured: ~0.68)."""
    torch.set_num_threads(1)
    d = load_digits(images=True)
    X, y = d.X[:600], d.y[:600]
    mu = (torch.arange(600) % 2).float()
    yy = torch.where(mu > 0, 9 - y, y)
    kw = dict(hidden=(64, 32), epochs=40, lr=3e-3, random_state=0)
    acc = {
        m: ContextualClassifier(m, **kw).fit(X[:400], yy[:400], mu[:400]).score(X[400:], yy[400:], mu[400:])
        for m in ("pooled", "concat", "weights")
    }
    assert acc["pooled"] < 0.6 and acc["concat"] > acc["pooled"] + 0.1 and acc["weights"] > 0.75


def test_contextual_classifier_errors_and_weights():
    d = load_digits(images=True)
    X, y = d.X[:100], d.y[:100]
    with pytest.raises(ValueError, match=r"context must have shape \(100, c\)"):
        ContextualClassifier("concat", epochs=0).fit(X, y, np.zeros((99, 2)))
    with pytest.raises(ValueError, match="context is required"):
        ContextualClassifier("weights", epochs=0).fit(X, y)
    est = ContextualClassifier("concat", hidden=(8,), epochs=1, random_state=0).fit(X, y, np.zeros((100, 2)))
    with pytest.raises(ValueError, match="context must have 2 columns"):
        est.predict(X, np.zeros((100, 3)))
    with pytest.raises(ValueError, match="model must be one of"):
        ContextualClassifier("hyper")
    pooled = ContextualClassifier("pooled", hidden=(8,), epochs=1, random_state=0).fit(X, y)
    assert pooled.predict(X).shape == (100,)
    # sample_weight reaches the loss: with weight only on class 3, the model predicts 3 almost everywhere
    w = (y == 3).float().numpy()
    one = ContextualClassifier("pooled", hidden=(8,), epochs=5, random_state=0).fit(X, y, sample_weight=w)
    assert (one.predict(X.numpy()) == 3).mean() > 0.9


def test_experiment_smoke(tmp_path):
    import json

    from tlkernels.experiments import multitask as ex

    r = ex.run_multitask(seeds=(0,), n_labels=8, n_unrelated=8, steps=3, soft_grid=[(0.01, 0.0)])
    assert {row["method"] for row in r["rows"]} == set(ex.MT_METHODS)
    assert "| Hard sharing + unrelated task |" in ex.table(r)
    g = ex.run_domaingen(seeds=(0,), epochs=1, plot_angles=(0,))
    assert set(g["rows"][0]["groups"]) == {"seen", "interpolation", "extrapolation"}
    assert "| Oracle (trained on test angles) |" in ex.table(g)
    json.dumps(r), json.dumps(g)
    ex.plot_domaingen(g, str(tmp_path / "dg.png"))
    assert (tmp_path / "dg.png").stat().st_size > 0
