"""Weak supervision: self-training with pseudo-labels, arg-max subwindow search (exhaustive and
ESS branch-and-bound), the weakly-supervised localiser and its canvas-digit data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from tlkernels.weak import SelfTraining, WeakLocalizer, iou, localize, make_canvas_digits, window_sums

torch.set_num_threads(1)


def _blobs(n, seed, sep=4.0):
    r = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = r.normal(size=(n, 2)) + np.c_[np.where(y == 1, sep / 2, -sep / 2), np.zeros(n)]
    return X, y


# ---------------------------------------------------------------- self-training


def test_perfect_initial_model_is_a_fixed_point():
    X, y = _blobs(400, 0, sep=12.0)  # separable by a wide margin: the labelled-only model is perfect
    Xl, yl, Xu, yu = X[:20], y[:20], X[20:], y[20:]
    st = SelfTraining(LogisticRegression(C=10.0), threshold=0.9, max_rounds=5).fit(Xl, yl, Xu, y_unlabeled_true=yu)
    assert st.estimators_[0].score(Xu, yu) == 1.0
    np.testing.assert_array_equal(st.pseudo_labels_, yu)  # every pseudo-label is the true label
    assert st.history_[1]["pseudo_accuracy"] == 1.0 and st.history_[1]["n_pseudo"] == len(yu)
    # round 2 would retrain on the same data: it stops there, and the model is that of training on all true labels
    assert st.n_rounds_ == 1
    ref = LogisticRegression(C=10.0).fit(np.r_[Xl, Xu], np.r_[yl, yu])
    np.testing.assert_allclose(st.estimator_.coef_, ref.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(st.predict(Xu), yu)


def test_threshold_above_one_adds_nothing():
    X, y = _blobs(200, 1)
    st = SelfTraining(LogisticRegression(), threshold=1.01, max_rounds=5).fit(X[:10], y[:10], X[10:])
    assert st.n_rounds_ == 0 and not st.pseudo_mask_.any() and (st.pseudo_labels_ == -1).all()
    ref = LogisticRegression().fit(X[:10], y[:10])
    np.testing.assert_allclose(st.predict_proba(X), ref.predict_proba(X))


def test_self_training_improves_on_two_clusters():
    # two labelled points placed so that the labelled-only boundary is tilted; the unlabeled
    # clusters pull it back towards x = 0
    X, y = _blobs(600, 2, sep=5.0)
    yl = np.array([0, 1])
    Xl = np.array([[-1.0, 4.0], [1.0, -4.0]])
    base = LogisticRegression(C=100.0).fit(Xl, yl)
    X_test, y_test = _blobs(1000, 3, sep=5.0)
    st = SelfTraining(LogisticRegression(C=100.0), threshold=0.9, max_rounds=10).fit(Xl, yl, X, y_unlabeled_true=y)
    b, s = base.score(X_test, y_test), st.score(X_test, y_test)
    assert s > b + 0.05, (b, s)
    assert st.n_rounds_ >= 2
    assert all(h["n_pseudo"] > 0 for h in st.history_[1:])


def test_max_new_per_round_and_confidence_weights():
    X, y = _blobs(300, 4)
    st = SelfTraining(
        LogisticRegression(), threshold=0.6, max_rounds=3, max_new_per_round=25, weight_by_confidence=True
    ).fit(X[:10], y[:10], X[10:])
    counts = [h["n_pseudo"] for h in st.history_]
    assert counts[:4] == [0, 25, 50, 75]
    # the kept examples are the most confident ones of the round that chose them
    assert st.confidence_[st.pseudo_mask_].min() >= 0.6


def test_self_training_with_finetune_and_tensors():
    from torch import nn

    from tlkernels.transfer import FineTune

    X, y = _blobs(200, 5, sep=6.0)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    st = SelfTraining(
        FineTune(net, lr=1e-2, epochs=15, batch_size=16), threshold=0.9, max_rounds=2, random_state=0
    ).fit(Xt[:10], yt[:10], Xt[10:], y_unlabeled_true=yt[10:])
    assert st.history_[1]["n_pseudo"] > 0 and st.history_[1]["pseudo_accuracy"] > 0.9
    assert st.score(Xt, yt) > 0.9
    assert st.predict_proba(Xt).shape == (200, 2)


def test_self_training_errors_name_arguments():
    X, y = _blobs(50, 6)
    with pytest.raises(ValueError, match="threshold"):
        SelfTraining(LogisticRegression(), threshold=-0.1)
    with pytest.raises(ValueError, match="max_rounds"):
        SelfTraining(LogisticRegression(), max_rounds=-1)
    with pytest.raises(ValueError, match="max_new_per_round"):
        SelfTraining(LogisticRegression(), max_new_per_round=0)
    with pytest.raises(ValueError, match="predict_proba"):
        SelfTraining(object.__new__(type("NoProba", (), {"fit": lambda self, X, y: self})))
    with pytest.raises(ValueError, match="X_unlabeled"):
        SelfTraining(LogisticRegression()).fit(X[:10], y[:10], X[10:, :1])
    with pytest.raises(ValueError, match="y must have shape"):
        SelfTraining(LogisticRegression()).fit(X[:10], y[:9], X[10:])
    with pytest.raises(ValueError, match="y_unlabeled_true"):
        SelfTraining(LogisticRegression()).fit(X[:10], y[:10], X[10:], y_unlabeled_true=y[:3])
    with pytest.raises(ValueError, match="not fitted"):
        SelfTraining(LogisticRegression()).predict(X)


# ---------------------------------------------------------------- subwindow search


def _brute(s, hmin=1, wmin=1):
    H, W = s.shape
    best = -np.inf
    for t in range(H):
        for b in range(t + hmin, H + 1):
            for l in range(W):
                for r in range(l + wmin, W + 1):
                    best = max(best, s[t:b, l:r].sum())
    return best


def test_exhaustive_matches_brute_force():
    r = np.random.default_rng(0)
    for _ in range(5):
        s = r.normal(size=(6, 7)) - 0.3
        box, info = localize(s, "exhaustive", return_info=True)
        assert np.isclose(info["score"], _brute(s))
        assert np.isclose(s[box[0] : box[2], box[1] : box[3]].sum(), info["score"])
        assert info["n_evaluated"] == (6 * 7 // 2) * (7 * 8 // 2)


@pytest.mark.parametrize("kind", ["mixed", "negative", "positive", "integer", "blob"])
def test_branch_and_bound_equals_exhaustive(kind):
    for seed in range(25):
        r = np.random.default_rng(seed)
        H, W = r.integers(1, 20, 2)
        s = r.normal(size=(H, W))
        if kind == "negative":
            s = -np.abs(s) - 0.01
        elif kind == "positive":
            s = np.abs(s) + 0.01
        elif kind == "integer":
            s = r.integers(-3, 3, (H, W)).astype(float)  # many ties
        elif kind == "blob":
            s = s - 1.0
            s[H // 4 : H // 2 + 1, W // 3 : W // 2 + 1] += 3.0
        for mn, mx in ((1, None), ((min(2, H), min(3, W)), (max(min(2, H), H - 1), W))):
            be, ie = localize(s, "exhaustive", mn, mx, return_info=True)
            bb, ib = localize(s, "branch_and_bound", mn, mx, return_info=True)
            assert np.isclose(ie["score"], ib["score"]), (seed, be, bb)
            assert np.isclose(s[bb[0] : bb[2], bb[1] : bb[3]].sum(), ib["score"])
            h, w = bb[2] - bb[0], bb[3] - bb[1]
            mnh, mnw = (mn, mn) if isinstance(mn, int) else mn
            assert h >= mnh and w >= mnw
            if kind != "integer":
                np.testing.assert_array_equal(be, bb)  # continuous scores: a unique arg-max
            if kind == "positive" and mx is None:
                np.testing.assert_array_equal(bb, [0, 0, H, W])  # the whole map
            if kind == "negative" and mn == 1:
                i, j = np.unravel_index(np.argmax(s), s.shape)
                np.testing.assert_array_equal(bb, [i, j, i + 1, j + 1])  # the least negative pixel


def test_branch_and_bound_evaluates_far_fewer_boxes():
    r = np.random.default_rng(1)
    s = r.normal(size=(24, 24)) * 0.3 - 0.5
    s[5:13, 9:15] += 2.0
    _, ie = localize(s, "exhaustive", return_info=True)
    box, ib = localize(s, "branch_and_bound", return_info=True)
    np.testing.assert_array_equal(box, [5, 9, 13, 15])
    assert ie["n_evaluated"] == (24 * 25 // 2) ** 2
    assert ib["n_evaluated"] * 20 < ie["n_evaluated"]


def test_window_sums_match_localize():
    r = np.random.default_rng(2)
    s = torch.tensor(r.normal(size=(3, 9, 8)))
    ws = window_sums(s, 2, (5, 6))
    for i in range(3):
        _, info = localize(s[i], "exhaustive", 2, (5, 6), return_info=True)
        assert np.isclose(float(ws[i].max()), info["score"])


def test_iou_known_values():
    assert iou([0, 0, 2, 2], [0, 0, 2, 2]) == 1.0
    assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)  # overlap 1, union 4 + 4 - 1
    assert iou([0, 0, 2, 4], [0, 2, 2, 6]) == pytest.approx(4 / 12)
    assert iou([0, 0, 2, 2], [2, 2, 4, 4]) == 0.0  # touching corners, exclusive ends
    assert iou([0, 0, 4, 4], [1, 1, 3, 3]) == pytest.approx(4 / 16)  # nested
    np.testing.assert_allclose(
        iou(np.array([[0, 0, 2, 2], [0, 0, 1, 1]]), np.array([[1, 1, 3, 3], [0, 0, 1, 1]])), [1 / 7, 1.0]
    )


def test_localization_errors_name_arguments():
    s = np.zeros((5, 5))
    with pytest.raises(ValueError, match="method"):
        localize(s, "greedy")
    with pytest.raises(ValueError, match="score_map"):
        localize(np.zeros(5))
    with pytest.raises(ValueError, match="min_size"):
        localize(s, min_size=6)
    with pytest.raises(ValueError, match="must not exceed"):
        localize(s, min_size=4, max_size=3)
    with pytest.raises(ValueError, match="boxes_a"):
        iou([0, 0, 2], [0, 0, 2, 2])
    with pytest.raises(ValueError, match="y1 >= y0"):
        iou([2, 0, 0, 2], [0, 0, 2, 2])


# ---------------------------------------------------------------- canvas digits and the localiser


def test_canvas_digits_boxes_hold_the_digit():
    X, y, b = make_canvas_digits(60, canvas=20, random_state=0, n_distractors=0, noise=0.0)
    assert X.shape == (60, 1, 20, 20) and y.shape == (60,) and b.shape == (60, 4)
    assert int(y.sum()) == 30
    for i in range(60):
        if y[i] == 0:
            assert (b[i] == -1).all() and float(X[i].max()) == 0.0
        else:
            y0, x0, y1, x1 = b[i].tolist()
            ink = (X[i, 0] > 0.2).numpy()
            assert ink[y0:y1, x0:x1].sum() == ink.sum()  # all the ink is in the box, and the box is tight
            assert ink[y0].any() and ink[y1 - 1].any() and ink[:, x0].any() and ink[:, x1 - 1].any()
            assert 1 <= y1 - y0 <= 8 and 1 <= x1 - x0 <= 8
    with pytest.raises(ValueError, match="canvas"):
        make_canvas_digits(5, canvas=6)
    with pytest.raises(ValueError, match="positive_fraction"):
        make_canvas_digits(5, positive_fraction=1.5)


def test_weak_localizer_learns_from_image_labels():
    from tlkernels.data import load_digits, stratified_split

    tr, te = stratified_split(load_digits(images=True), [600, None], random_state=0)
    X, y, _ = make_canvas_digits(240, canvas=16, digits=tr, random_state=0)
    Xt, yt, bt = make_canvas_digits(60, canvas=16, digits=te, random_state=1)
    wl = WeakLocalizer(channels=8, epochs=10, max_size=10, random_state=0).fit(X, y)
    assert wl.classification_score(Xt, yt) > 0.8
    acc = wl.score(Xt, bt)
    # a fixed centered 8x6 box: the baseline the localiser must beat
    centre = np.tile([4, 5, 12, 11], (int(yt.sum()), 1))
    base = float((iou(centre, bt[yt == 1].numpy()) >= 0.5).mean())
    assert acc > 0.6 and acc > base + 0.3, (acc, base)
    boxes = wl.localize(Xt)
    assert boxes.shape == (60, 4) and wl.n_evaluated_.shape == (60,)
    wl.method = "exhaustive"
    np.testing.assert_array_equal(wl.localize(Xt[:10]), boxes[:10])
    with pytest.raises(ValueError, match="image_labels"):
        WeakLocalizer(epochs=1).fit(X, y + 1)
    with pytest.raises(ValueError, match="images"):
        WeakLocalizer(epochs=1).fit(X[:, :, 0], y)
    with pytest.raises(ValueError, match="pooling"):
        WeakLocalizer(pooling="mean")


def test_experiment_smoke():
    from tlkernels.experiments import weak as ex

    r = ex.run(seeds=(0,), n_per_class=(2,), n_train=100, n_test=40, epochs=2, max_rounds=1)
    st, loc = r["selftraining"][0], r["localization"][0]["methods"]
    assert set(st) >= {"labelled_only", "self_training", "oracle"}
    assert st["self_training"]["threshold"] in ex.THRESHOLDS
    assert st["oracle"]["test_accuracy"] > st["labelled_only"]["test_accuracy"]
    assert (
        loc["weak_window"]["same_score"]
        and loc["weak_window"]["ess_boxes_mean"] < loc["weak_window"]["exhaustive_boxes"]
    )
    t = ex.table(r)
    assert "Self-training" in t and "Centered fixed box" in t and "ESS" in t
    import json

    json.dumps(r)


def test_self_training_equals_the_loop_written_out():
    """fit's models, pseudo-labels and history equal self-training written as one loop: every round
    pseudo-labels all unlabeled examples, keeps those at confidence >= threshold (at most
    max_new_per_round more than before, the most confident first), weights them by confidence and
    stops when the labels repeat."""
    from sklearn.datasets import make_classification

    X, y = make_classification(300, 6, n_informative=4, n_classes=3, random_state=0)
    Xl, yl, Xu, yu = X[:40], y[:40], X[40:], y[40:]
    st = SelfTraining(threshold=0.6, max_rounds=4, max_new_per_round=30, weight_by_confidence=True)
    st.fit(Xl, yl, Xu, y_unlabeled_true=yu)

    est = LogisticRegression(max_iter=1000).fit(Xl, yl)
    coefs, labels, n_pseudo, accs = [est.coef_], np.full(len(Xu), -1), [0], [None]
    for _ in range(4):
        proba = est.predict_proba(Xu)
        conf, pred = proba.max(1), est.classes_[proba.argmax(1)]
        cand = np.flatnonzero(conf >= 0.6)
        keep = cand[np.argsort(-conf[cand], kind="stable")[: (labels >= 0).sum() + 30]]
        new = np.full(len(Xu), -1)
        new[keep] = pred[keep]
        if (new == labels).all():
            break
        labels, idx = new, np.flatnonzero(new >= 0)
        w = np.concatenate([np.ones(len(Xl)), conf[idx]])
        est = LogisticRegression(max_iter=1000).fit(np.concatenate([Xl, Xu[idx]]), np.concatenate([yl, labels[idx]]), w)
        coefs.append(est.coef_)
        n_pseudo.append(len(idx))
        accs.append(float((labels[idx] == yu[idx]).mean()))

    assert st.n_rounds_ == len(coefs) - 1 >= 2
    np.testing.assert_array_equal(st.pseudo_labels_, labels)
    assert [h["n_pseudo"] for h in st.history_] == n_pseudo
    assert [h["pseudo_accuracy"] for h in st.history_] == accs
    for mine, ref in zip(st.estimators_, coefs):
        np.testing.assert_array_equal(mine.coef_, ref)
