"""Knowledge distillation: the tempered cross-entropy, ensemble targets and the Distill estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tlkernels.transfer.distill import Distill, DistillationLoss, distillation_targets, tempered_probs

torch.set_num_threads(1)


def _mlp(d=6, c=3, h=16, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, c))


@pytest.mark.parametrize("T", [1.0, 0.5, 2.0, 4.0, 8.0])
@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_teacher_equal_to_student_gives_zero_gradient(T, kind):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    s = z.clone().requires_grad_(True)
    teacher = z if kind == "logits" else torch.softmax(z, 1)
    loss = DistillationLoss(T, teacher_kind=kind)(s, teacher)
    loss.backward()
    assert s.grad.abs().max() < 1e-14
    # the value is T^2 times the teacher's tempered entropy (a cross-entropy, not a KL)
    q = torch.softmax(z / T, 1)
    assert loss.item() == pytest.approx(T * T * float(-(q * q.log()).sum(1).mean()), rel=1e-12)
    # and a different student does get a gradient
    s2 = (z + 1e-2 * torch.randn(5, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    DistillationLoss(T, teacher_kind=kind)(s2, teacher).backward()
    assert s2.grad.abs().max() > 1e-6


def test_loss_matches_hand_computed_value():
    # T = 2: student logits (0, 2 ln 3) -> softmax(s/2) = (1/4, 3/4); teacher logits (0, 0) -> (1/2, 1/2)
    s = torch.tensor([[0.0, 2 * math.log(3.0)]], dtype=torch.float64)
    t = torch.zeros(1, 2, dtype=torch.float64)
    soft = 4 * -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))  # T^2 * CE
    assert DistillationLoss(2.0)(s, t).item() == pytest.approx(soft, rel=1e-12)
    assert soft == pytest.approx(4 * math.log(4) - 2 * math.log(3))
    # + hard term at T = 1: softmax(s) = (1/10, 9/10), label 1 -> -ln 0.9
    assert DistillationLoss(2.0, hard_weight=0.5)(s, t, torch.tensor([1])).item() == pytest.approx(
        soft + 0.5 * -math.log(0.9), rel=1e-12
    )
    # Lampert 2019's probabilities form: p = (0.2, 0.8), T = 2 -> p^(1/2) renormalised = (1/3, 2/3)
    p = torch.tensor([[0.2, 0.8]], dtype=torch.float64)
    assert torch.allclose(tempered_probs(p, 2.0, "probs"), torch.tensor([[1 / 3, 2 / 3]], dtype=torch.float64))
    val = 4 * -(1 / 3 * math.log(0.25) + 2 / 3 * math.log(0.75))
    assert DistillationLoss(2.0, teacher_kind="probs")(s, p).item() == pytest.approx(val, rel=1e-12)
    # reductions
    s3, t3 = s.repeat(3, 1), t.repeat(3, 1)
    assert DistillationLoss(2.0, reduction="none")(s3, t3).shape == (3,)
    assert DistillationLoss(2.0, reduction="sum")(s3, t3).item() == pytest.approx(3 * soft)


def test_teacher_side_is_detached():
    teacher, student = _mlp(seed=1), _mlp(seed=2)
    x = torch.randn(8, 6)
    DistillationLoss(3.0)(student(x), teacher(x)).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_zero_weight_removes_example_from_loss():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 0.0, 1.0], dtype=torch.float64)
    loss = DistillationLoss(2.0, hard_weight=1.0)
    full = loss(s, t, torch.tensor([0, 1, 2, 0]), weight=w)
    keep = [0, 1, 3]
    sub = loss(s[keep], t[keep], torch.tensor([0, 1, 0]), weight=w[keep])
    assert full.item() == pytest.approx(sub.item(), rel=1e-12)
    full.backward()
    assert s.grad[2].abs().max() == 0


def test_ensemble_targets_are_the_mean_of_members_probabilities():
    members = [_mlp(seed=k) for k in range(3)]
    X = torch.randn(20, 6)
    for T in (1.0, 3.0):
        got = distillation_targets(members, X, T)
        with torch.no_grad():
            want = torch.stack([torch.softmax(m(X) / T, 1) for m in members]).mean(0)
        assert torch.allclose(got, want, atol=1e-6)
        assert torch.allclose(got.sum(1), torch.ones(20), atol=1e-6)
    single = distillation_targets(members[0], X.numpy(), 1.0)
    assert torch.allclose(single, torch.softmax(members[0](X), 1).detach(), atol=1e-6)
    # a member in train mode is evaluated in eval mode and left in train mode
    drop = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.9))
    drop.train()
    a, b = distillation_targets(drop, X), distillation_targets(drop, X)
    assert torch.equal(a, b) and drop.training


def test_student_distilled_on_unlabeled_data_matches_teacher():
    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 4))

    teacher = net(0)
    with torch.no_grad():
        teacher[2].weight.mul_(4)  # a confident teacher (a random init is nearly uniform)
    g = torch.Generator().manual_seed(1)
    X, X_test = torch.randn(2000, 2, generator=g), torch.randn(1000, 2, generator=g)
    y_test = teacher(X_test).argmax(1).detach()
    student = net(5)
    est = Distill(student, teacher, temperature=2.0, lr=1e-2, epochs=20, batch_size=64, random_state=0).fit(
        X, eval_set=(X_test, y_test)
    )  # y=None: the teacher labels X
    agree = est.score(X_test, y_test)
    assert est.history_[0]["eval_accuracy"] < 0.8  # it had to learn the teacher
    assert agree > 0.95
    assert est.history_[0]["epoch"] == 0 and len(est.history_) == 21
    assert est.history_[-1]["eval_accuracy"] == pytest.approx(agree)
    assert est.predict_proba(X_test[:3]).shape == (3, 4)
    # the given student is untouched
    assert torch.equal(student[0].weight, net(5)[0].weight)


def test_zero_sample_weights_remove_examples_from_fit():
    teacher = _mlp(seed=1)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 6, generator=g)
    y = teacher(X).argmax(1).detach()
    w = torch.ones(40)
    w[30:] = 0
    X2, y2 = X.clone(), y.clone()
    X2[30:] = 5 * torch.randn(10, 6, generator=g)  # change only the zero-weighted examples
    y2[30:] = (y2[30:] + 1) % 3
    fits = [
        Distill(
            _mlp(seed=3), teacher, temperature=2.0, hard_weight=1.0, lr=1e-2, epochs=5, batch_size=16, random_state=0
        ).fit(a, b, sample_weight=w)
        for a, b in ((X, y), (X2, y2))
    ]
    for p, q in zip(fits[0].model_.parameters(), fits[1].model_.parameters()):
        assert torch.equal(p, q)
    other = Distill(
        _mlp(seed=3), teacher, temperature=2.0, hard_weight=1.0, lr=1e-2, epochs=5, batch_size=16, random_state=0
    ).fit(X2, y2)
    assert not torch.equal(other.model_[0].weight, fits[0].model_[0].weight)


def test_ensemble_teacher_and_unlabeled_pool():
    members = [_mlp(seed=k) for k in range(3)]
    g = torch.Generator().manual_seed(0)
    X, Xu = torch.randn(30, 6, generator=g), torch.randn(50, 6, generator=g)
    y = torch.randint(0, 3, (30,), generator=g)
    est = Distill(_mlp(seed=9), members, temperature=4.0, hard_weight=0.5, epochs=2, random_state=0)
    est.fit(X, y, sample_weight=np.ones(30), X_unlabeled=Xu)
    assert est.n_train_ == 80 and est.n_classes_ == 3
    assert len(est.history_) == 3 and all(np.isfinite(h.get("loss", 0.0)) for h in est.history_)


def test_errors_name_the_argument():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            DistillationLoss(bad)
        with pytest.raises(ValueError, match="temperature"):
            Distill(_mlp(), _mlp(), temperature=bad)
        with pytest.raises(ValueError, match="temperature"):
            distillation_targets(_mlp(), torch.randn(3, 6), bad)
    with pytest.raises(ValueError, match="teacher_logits_or_probs"):
        DistillationLoss()(s, torch.randn(4, 5))
    with pytest.raises(ValueError, match="student_logits"):
        DistillationLoss()(torch.randn(4), t)
    with pytest.raises(ValueError, match="weight"):
        DistillationLoss()(s, t, weight=torch.ones(3))
    with pytest.raises(ValueError, match="target"):
        DistillationLoss(hard_weight=1.0)(s, t)
    with pytest.raises(ValueError, match="hard_weight"):
        DistillationLoss(hard_weight=-1)
    with pytest.raises(ValueError, match="reduction"):
        DistillationLoss(reduction="avg")
    X = torch.randn(10, 6)
    with pytest.raises(ValueError, match="student"):  # student has 5 outputs, teacher 3
        Distill(_mlp(c=5), _mlp(c=3), epochs=1).fit(X)
    with pytest.raises(ValueError, match="hard_weight"):
        Distill(_mlp(), _mlp(), hard_weight=1.0, epochs=1).fit(X)
    with pytest.raises(ValueError, match="X_unlabeled"):
        Distill(_mlp(), _mlp(), epochs=1).fit(X, X_unlabeled=torch.randn(5, 7))
    with pytest.raises(ValueError, match="sample_weight"):
        Distill(_mlp(), _mlp(), epochs=1).fit(X, sample_weight=np.ones(9))
    with pytest.raises(ValueError, match="teacher"):
        Distill(_mlp(), "not a model")
    with pytest.raises(ValueError, match="teachers"):
        distillation_targets([_mlp(c=3), _mlp(c=4)], X)


def test_experiment_smoke(tmp_path):
    import json

    from tlkernels.experiments import distill as ex

    res = ex.run(
        seeds=(0,),
        n_labelled=50,
        n_val=50,
        n_test=50,
        n_pool=100,
        epochs=2,
        teacher_epochs=2,
        n_ensemble=2,
        temperatures=(1, 2),
        teacher_hidden=(32,),
        member_hidden=(16,),
        checkpoints=(1, 2),
    )
    json.dumps(res)
    rows = res["per_seed"][0]["rows"]
    assert set(rows) == set(ex.ROWS)
    assert rows["kd_teacher"]["temperature"] in (1, 2) and len(rows["kd_teacher"]["curve"]) == 3
    assert res["per_seed"][0]["sizes"]["pool"] == 100
    t = ex.table(res)
    assert t.count("\n") == len(ex.ROWS) + 1 and "Student ← ensemble" in t
    ex.plot(res, str(tmp_path / "kd.png"))
    assert (tmp_path / "kd.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="options"):
        ex.run(seeds=(0,), n_labeled=5)
