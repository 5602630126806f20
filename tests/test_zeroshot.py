"""Known-answer tests of tlkernels.zeroshot (DAP, bilinear hinge, ConSE) and the digits table."""

import numpy as np
import pytest
import torch

from tlkernels.zeroshot import (
    ATTRIBUTE_NAMES,
    DAP,
    DIGIT_ATTRIBUTES,
    BilinearCompatibility,
    ConSE,
    EmbeddingZeroShot,
    ZeroShotHingeLoss,
    encode_classes,
)

torch.set_num_threads(1)
SEEN, UNSEEN = np.arange(7), np.array([7, 8, 9])


class _Perfect:
    """Attribute classifier that reads attribute m from column m of X: p = 1 - eps when right."""

    def __init__(self, m, eps=0.01):
        self.m, self.eps = m, eps

    def fit(self, X, y, sample_weight=None):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        p1 = np.where(X[:, self.m] > 0.5, 1 - self.eps, self.eps)
        return np.stack([1 - p1, p1], 1)


def _class_coded(classes, per_class=20, seed=0):
    """X (N, A) = the digits' attribute rows of the classes (+ small noise), y (N,)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(classes, per_class)
    X = DIGIT_ATTRIBUTES[y].astype(float) + 0.05 * rng.standard_normal((len(y), DIGIT_ATTRIBUTES.shape[1]))
    return X, y


def _linear_problem(seed=0, n=80):
    """8 classes with distinct 6-bit attribute rows; X (N, 20) = attributes @ W + noise."""
    rng = np.random.default_rng(seed)
    S = np.array(
        [
            [1, 0, 0, 1, 0, 1],
            [0, 1, 0, 0, 1, 1],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [1, 0, 1, 0, 1, 1],
            [0, 1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0, 1],
            [0, 0, 0, 1, 1, 1],
        ],
        dtype=bool,
    )
    W = rng.standard_normal((6, 20))
    y = np.repeat(np.arange(8), n)
    X = (2 * S[y] - 1.0) @ W + 0.5 * rng.standard_normal((len(y), 20))
    return X, y, S


def test_digit_table_is_usable_for_zero_shot():
    assert DIGIT_ATTRIBUTES.shape == (10, len(ATTRIBUTE_NAMES)) and DIGIT_ATTRIBUTES.dtype == bool
    assert 8 <= DIGIT_ATTRIBUTES.shape[1] <= 12
    assert len({r.tobytes() for r in DIGIT_ATTRIBUTES}) == 10  # every digit has its own row
    seen = DIGIT_ATTRIBUTES[SEEN]
    assert (seen.any(0) & ~seen.all(0)).all()  # every attribute varies over the seen classes 0-6


def test_dap_with_perfect_attribute_classifiers_is_perfect_on_unseen():
    Xs, ys = _class_coded(SEEN)
    Xu, yu = _class_coded(UNSEEN, seed=1)
    A = DIGIT_ATTRIBUTES.shape[1]
    for prior in ("empirical", "uniform"):
        dap = DAP([_Perfect(m) for m in range(A)], prior=prior).fit(Xs, ys, DIGIT_ATTRIBUTES)
        assert dap.score(Xu, yu) == 1.0  # 3-way among 7, 8, 9 (default candidates = unseen)
        assert dap.score(Xu, yu, candidate_classes=range(10)) == 1.0  # generalised 10-way
        P = dap.predict_proba(Xu)
        assert P.shape == (len(yu), 3) and np.allclose(P.sum(1), 1)
    np.testing.assert_allclose(dap.predict_attributes(Xu), np.where(DIGIT_ATTRIBUTES[yu], 0.99, 0.01))


def test_dap_rule_matches_hand_computation():
    S = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=bool)

    class _Fixed:
        def __init__(self, p):
            self.p = p

        def fit(self, X, y, sample_weight=None):
            self.classes_ = np.array([0, 1])
            return self

        def predict_proba(self, X):
            return np.tile([1 - self.p, self.p], (len(X), 1))

    X, y = np.zeros((4, 1)), np.array([0, 1, 0, 1])
    dap = DAP([_Fixed(0.9), _Fixed(0.4)]).fit(X, y, S)
    np.testing.assert_allclose(dap.attribute_prior_, [0.5, 0.5])
    # class 2 = (1, 1): log(0.9 / 0.5) + log(0.4 / 0.5); class 3 = (0, 0): log(0.1 / 0.5) + log(0.6 / 0.5)
    expect = [np.log(0.9 / 0.5) + np.log(0.4 / 0.5), np.log(0.1 / 0.5) + np.log(0.6 / 0.5)]
    np.testing.assert_allclose(dap.decision_function(X[:1])[0], expect)
    assert dap.predict(X[:1])[0] == 2


def test_dap_generalises_to_unseen_class_with_linear_attributes():
    X, y, S = _linear_problem()
    seen = y < 6
    dap = DAP(C=1.0, random_state=0).fit(X[seen], y[seen], S)
    assert dap.score(X[~seen], y[~seen]) > 0.9  # 2-way among the never-seen classes 6, 7
    assert dap.score(X[~seen], y[~seen], candidate_classes=range(8)) > 0.6  # 8-way
    # attribute prediction on unseen examples is near-perfect too
    assert ((dap.predict_attributes(X[~seen]) > 0.5) == S[y[~seen]]).mean() > 0.95


def test_dap_sample_weight_zero_equals_dropping_examples():
    X, y, S = _linear_problem(n=30)
    seen = y < 6
    Xs, ys = X[seen], y[seen]
    w = np.ones(len(ys))
    w[:20] = 0.0
    a = DAP(C=1.0).fit(Xs, ys, S, sample_weight=w).predict_attributes(X[~seen])
    b = DAP(C=1.0).fit(Xs[20:], ys[20:], S).predict_attributes(X[~seen])
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_hinge_loss_zero_when_margins_hold_and_hand_values():
    loss = ZeroShotHingeLoss(margin=1.0)
    assert float(loss(torch.tensor([[2.0, 1.0, 0.5]]), torch.tensor([0]))) == 0.0
    s = torch.tensor([[1.0, 1.5, 0.0], [0.0, 0.2, 0.3]])
    t = torch.tensor([0, 2])
    # row 0: max(0, 1 - 1 + 1.5) + max(0, 1 - 1 + 0) = 1.5; row 1 (margin 1): 0.7 + 0.9 = 1.6
    torch.testing.assert_close(ZeroShotHingeLoss(1.0, reduction="none")(s, t), torch.tensor([1.5, 1.6]))
    torch.testing.assert_close(loss(s, t), torch.tensor(1.55))
    # max over wrong classes (the slide's form), margin 0.5: row 0: 1.0, row 1: 0.5 - 0.3 + 0.2 = 0.4
    torch.testing.assert_close(ZeroShotHingeLoss(0.5, "max", "none")(s, t), torch.tensor([1.0, 0.4]))
    torch.testing.assert_close(
        ZeroShotHingeLoss(1.0)(s, t, weight=torch.tensor([1.0, 3.0])), torch.tensor((1.5 + 3 * 1.6) / 4)
    )
    # gradient of row 0: only class 1 violates strictly (class 2 sits at the kink, margin exactly 1)
    s0 = s.clone().requires_grad_(True)
    ZeroShotHingeLoss(1.0, reduction="sum")(s0[:1], t[:1]).backward()
    torch.testing.assert_close(s0.grad[0], torch.tensor([-1.0, 1.0, 0.0]))


def test_bilinear_compatibility_is_vMw_plus_bias():
    comp = BilinearCompatibility(4, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        comp.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    v, w = torch.randn(5, 4), torch.randn(2, 3)
    torch.testing.assert_close(comp(v, w), v @ comp.M @ w.T + (comp.bias @ w.T)[None])
    with pytest.raises(ValueError, match="w must have shape"):
        comp(v, torch.randn(2, 4))


def test_embedding_zero_shot_generalises_on_linear_problem():
    X, y, S = _linear_problem()
    seen = y < 6
    est = EmbeddingZeroShot(margin=1.0, lr=1e-2, epochs=40, weight_decay=1e-4, random_state=0)
    est.fit(X[seen], y[seen], S)
    assert est.history_[-1]["loss"] < est.history_[0]["loss"]
    assert est.score(X[~seen], y[~seen]) > 0.85
    assert est.decision_function(X[:3], candidate_classes=[6, 7, 0]).shape == (3, 3)


def test_conse_T1_one_hot_maps_to_nearest_unseen_embedding():
    class _OneHot:
        classes_ = SEEN

        def predict_proba(self, X):
            return np.eye(7)[X[:, 0].astype(int)]

    con = ConSE(_OneHot(), T=1, prefit=True).fit(None, None, DIGIT_ATTRIBUTES)
    X = np.arange(7, dtype=float)[:, None]
    E = DIGIT_ATTRIBUTES / np.linalg.norm(DIGIT_ATTRIBUTES, axis=1, keepdims=True)
    expect = UNSEEN[(E[SEEN] @ E[UNSEEN].T).argmax(1)]
    np.testing.assert_array_equal(con.predict(X), expect)
    np.testing.assert_allclose(
        con.embed(X), DIGIT_ATTRIBUTES[SEEN] / np.linalg.norm(DIGIT_ATTRIBUTES[SEEN], axis=1, keepdims=True)
    )

    # T = 2: the embedding is the probability-weighted mean of the two top classes
    class _Two:
        classes_ = SEEN

        def predict_proba(self, X):
            p = np.zeros((len(X), 7))
            p[:, 0], p[:, 3], p[:, 5] = 0.6, 0.3, 0.1
            return p

    con2 = ConSE(_Two(), T=2, prefit=True, normalize=False).fit(None, None, DIGIT_ATTRIBUTES)
    np.testing.assert_allclose(con2.embed(X[:1])[0], (0.6 * DIGIT_ATTRIBUTES[0] + 0.3 * DIGIT_ATTRIBUTES[3]) / 0.9)


def test_conse_fits_a_logistic_on_seen_classes():
    X, y, S = _linear_problem()
    seen = y < 6
    con = ConSE(T=3, C=1.0, random_state=0).fit(X[seen], y[seen], S)
    np.testing.assert_array_equal(con.seen_classes_, np.arange(6))
    assert con.score(X[~seen], y[~seen]) > 0.6


def test_encode_classes_signed_unit_rows():
    E = encode_classes(np.array([[1, 0, 1, 1], [0, 0, 0, 0]]))
    np.testing.assert_allclose(E, [[0.5, -0.5, 0.5, 0.5], [-0.5, -0.5, -0.5, -0.5]])


def test_errors_name_arguments():
    Xs, ys = _class_coded(SEEN)
    with pytest.raises(ValueError, match="class_attributes must have shape"):
        DAP().fit(Xs, ys, DIGIT_ATTRIBUTES[0])
    with pytest.raises(ValueError, match="binary"):
        DAP().fit(Xs, ys, DIGIT_ATTRIBUTES * 0.5)
    with pytest.raises(ValueError, match="y holds classes \\[10\\]"):
        DAP().fit(Xs, np.where(ys == 0, 10, ys), DIGIT_ATTRIBUTES)
    dap = DAP().fit(Xs, ys, DIGIT_ATTRIBUTES)
    with pytest.raises(ValueError, match="candidate_classes holds unknown classes \\[12\\]"):
        dap.predict(Xs, candidate_classes=[7, 12])
    with pytest.raises(ValueError, match="class_attributes must have 12 attributes"):
        dap.predict(Xs, class_attributes=np.ones((10, 3)))
    with pytest.raises(ValueError, match="prior"):
        DAP(prior="flat")
    with pytest.raises(ValueError, match="margin must be > 0"):
        ZeroShotHingeLoss(margin=0.0)
    with pytest.raises(ValueError, match="margin must be > 0"):
        EmbeddingZeroShot(margin=-1.0)
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        ConSE(T=0)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        EmbeddingZeroShot(epochs=1).fit(Xs, ys, DIGIT_ATTRIBUTES, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="target must have shape"):
        ZeroShotHingeLoss()(torch.zeros(2, 3), torch.tensor([0, 3]))


def test_experiment_smoke_tiny_grids(tmp_path):
    import argparse
    import json

    from tlkernels.experiments import zeroshot as ex

    grids = {
        "dap": [{"C": 1.0, "prior": "empirical"}],
        "embedding": [{"margin": 1.0, "weight_decay": 1e-4}],
        "conse": [{"C": 1.0, "T": 2, "signed": False}],
        "fewshot": [{"C": 1.0}],
    }
    res = ex.run(seeds=(0,), methods=["dap", "embedding", "conse", "fewshot_1"], epochs=1, grids=grids)
    json.dumps(res)
    assert ex.GRIDS["dap"] != grids["dap"]  # the override does not leak into later runs
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["chance"]["unseen_accuracy"] == pytest.approx(1 / 3)
    for m in ("dap", "embedding", "conse", "fewshot_1"):
        assert 0.0 <= rows[m]["unseen_accuracy"] <= 1.0 and 0.0 <= rows[m]["gzsl_h"] <= 1.0
    assert rows["dap"]["unseen_accuracy"] > 0.34  # above chance even with a fixed C
    md = ex.table(res)
    assert md.count("\n") == 6 and "DAP" in md and "±" in md
    parser = argparse.ArgumentParser()
    ex.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["zeroshot", "--seeds", "1", "--json", str(tmp_path / "z.json")])
    assert args.func is ex._cmd and args.seed == 0 and args.seeds == 1
    with pytest.raises(ValueError, match="methods must be a subset"):
        ex.run(methods=["dap", "lasso"])
