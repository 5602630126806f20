"""DANN: the fused fork's gradients, a synthetic known answer (a coordinate that only reveals the
domain), weights, persistence, reverse validation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlkernels import dann_lambda
from tlkernels.adaptation import (
    DANN,
    DomainAdversarialLoss,
    proxy_a_distance,
    reverse_validation,
    select_by_reverse_validation,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: OpenMP hand-offs dominate on busy machines
    yield
    torch.set_num_threads(n)


def domain_coordinate_problem(n=400, seed=0):
    """x = (x1, x2, c): the label is x1 > 0 in both domains, c about 0 on the source and 2 on the
    target (plus N(0, 0.5^2) noise): c reveals the domain and nothing else."""
    g = torch.Generator().manual_seed(seed)
    xs, xt = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)
    Xs = torch.cat([xs, 0.5 * torch.randn(n, 1, generator=g)], 1)
    Xt = torch.cat([xt, 2.0 + 0.5 * torch.randn(n, 1, generator=g)], 1)
    return Xs, (xs[:, 0] > 0).long(), Xt, (xt[:, 0] > 0).long()


def extractor():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.ReLU())


def test_loss_module_gradients_match_plain_autograd():
    torch.manual_seed(0)
    f = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    dom = torch.tensor([0, 0, 0, 1, 1, 1])
    w = torch.tensor([1.0, 0.5, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    loss_mod = DomainAdversarialLoss(feature_dim=4, lam_max=0.7, gamma=10.0).double()
    cls = nn.Linear(4, 3).double()
    y = torch.tensor([0, 1, 2])
    f_task, d_loss = loss_mod(f, dom, 0.3, w)
    (F.cross_entropy(cls(f_task[:3]), y) + d_loss).backward()
    # by hand: the domain loss is the balanced weighted BCE; the features get g_task - lam g_adv
    f2 = f.detach().clone().requires_grad_(True)
    logits = loss_mod.head(f2).squeeze(1)
    per = F.binary_cross_entropy_with_logits(logits, dom.double(), reduction="none")
    d2 = 0.5 * ((w[:3] * per[:3]).sum() / w[:3].sum() + per[3:].mean())
    torch.testing.assert_close(d_loss, d2)
    g_adv = torch.autograd.grad(d2, f2, retain_graph=True)[0]
    g_task = torch.autograd.grad(F.cross_entropy(cls(f2[:3]), y), f2)[0]
    torch.testing.assert_close(f.grad, g_task - dann_lambda(0.3, 0.7, 10.0) * g_adv)


def test_known_answer_domain_only_coordinate():
    Xs, ys, Xt, yt = domain_coordinate_problem()
    res = {}
    for lam in (0.0, 1.0):
        m = DANN(extractor(), 2, lam_max=lam, lr=1e-2, batch_size=64, random_state=0, epochs=15).fit(Xs, ys, Xt)
        w = m.extractor_[0].weight.detach()
        res[lam] = dict(
            acc=m.score(Xt, yt),
            dom=m.domain_accuracy(Xs, Xt),
            pad=proxy_a_distance(m.transform(Xs), m.transform(Xt)),
            use_c=float(w[:, 2].norm() / w[:, :2].norm()),
            hist=m.history_,
        )
    src, dann = res[0.0], res[1.0]
    assert src["dom"] > 0.95 and src["pad"] > 1.8  # source-only features reveal the domain
    assert dann["dom"] < 0.75  # DANN's domain head is near chance
    assert dann["use_c"] < 0.75 * src["use_c"]  # the first layer reads c much less
    # (a fresh linear probe can still tell the domains apart from DANN's features: the game
    # only fools its own adversary, it does not remove c exactly)
    assert dann["acc"] > 0.9
    assert dann["hist"][-1]["domain_acc"] < dann["hist"][0]["domain_acc"]
    assert len(dann["hist"]) == 15 and {"class_loss", "domain_loss", "domain_acc", "lam", "lr"} <= set(dann["hist"][0])


def test_weights_snapshots_state_dict_and_errors():
    Xs, ys, Xt, yt = domain_coordinate_problem(n=100)
    kw = dict(lr=1e-2, batch_size=32, random_state=1, snapshot_epochs=[1, 3], epochs=3)
    a = DANN(extractor(), 2, **kw).fit(Xs, ys, Xt)
    b = DANN(extractor(), 2, **kw).fit(Xs, ys, Xt, source_weights=torch.ones(100))
    torch.testing.assert_close(a.predict_proba(Xt), b.predict_proba(Xt))  # unit weights = no weights
    c = DANN(extractor(), 2, **kw).fit(Xs, ys, Xt, source_weights=torch.rand(100))
    assert not torch.allclose(a.predict_proba(Xt), c.predict_proba(Xt))
    p3 = a.predict_proba(Xt)
    assert p3.shape == (100, 2) and torch.allclose(p3.sum(1), torch.ones(100))
    fresh = DANN(extractor(), 2, **kw)
    fresh.load_state_dict(a.state_dict())
    torch.testing.assert_close(fresh.predict_proba(Xt), p3)
    a.use_snapshot(1)
    assert not torch.allclose(a.predict_proba(Xt), p3)
    with pytest.raises(ValueError, match="no snapshot"):
        a.use_snapshot(2)
    with pytest.raises(ValueError, match="ys must lie"):
        DANN(extractor(), 2, epochs=1).fit(Xs, ys + 5, Xt)
    with pytest.raises(ValueError, match="source_weights"):
        DANN(extractor(), 2, epochs=1).fit(Xs, ys, Xt, source_weights=-torch.ones(100))
    with pytest.raises(ValueError, match="feature shape"):
        DANN(extractor(), 2, epochs=1).fit(Xs, ys, Xt[:, :2])
    with pytest.raises(RuntimeError, match="not fitted"):
        DANN(extractor(), 2).predict(Xs)


def test_reverse_validation_prefers_a_working_model():
    Xs, ys, Xt, _ = domain_coordinate_problem(n=200)

    def make(lr):
        return DANN(extractor(), 2, lam_max=0.5, lr=lr, batch_size=64, random_state=0)

    broken = reverse_validation(lambda: make(0.0), Xs, ys, Xt)  # lr 0: an untrained model
    good = reverse_validation(lambda: make(1e-2).clone(), Xs, ys, Xt)
    assert good > 0.85 and broken < good
    sel = select_by_reverse_validation(make, [dict(lr=0.0), dict(lr=1e-2)], Xs, ys, Xt, epochs=[2, 5])
    assert sel["best"]["lr"] == 1e-2 and len(sel["scores"]) == 4
    assert [s["epochs"] for s in sel["settings"]] == [2, 5, 2, 5]


def test_fit_equals_a_hand_written_dann_loop():
    """fit's parameters and history equal the DANN algorithm written out in one loop: source batches
    from a seeded permutation per epoch, target batches cycling through a permutation redrawn when
    exhausted, lam(p) and lr(p) at p = step / total, weighted class loss, gradient clipping, SGD."""
    g = torch.Generator().manual_seed(3)
    Xs, Xt = torch.randn(70, 5, generator=g), torch.randn(23, 5, generator=g) + 1.0
    ys, w = torch.randint(0, 3, (70,), generator=g), torch.rand(70, generator=g)
    torch.manual_seed(1)
    ext, cls, head = nn.Sequential(nn.Linear(5, 6), nn.ReLU()), nn.Linear(6, 3), nn.Linear(6, 1)
    kw = dict(lam_max=0.7, gamma=5.0, lr=0.05, batch_size=16, epochs=3, grad_clip=0.3, optimizer="sgd")
    d = DANN(ext, 3, 6, classifier=cls, domain_head=head, random_state=11, **kw).fit(Xs, ys, Xt, source_weights=w)

    adv = DomainAdversarialLoss(copy.deepcopy(head), lam_max=0.7, gamma=5.0)
    ext, cls = copy.deepcopy(ext), copy.deepcopy(cls)
    params = [*ext.parameters(), *cls.parameters(), *adv.parameters()]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(11)
    n, nt, b = 70, 23, 16
    total, step = 3 * math.ceil(n / b), 0
    tperm, tpos = torch.randperm(nt, generator=gen), 0
    history = []
    for epoch in range(1, 4):
        perm, sums = torch.randperm(n, generator=gen), [0.0, 0.0, 0.0]
        for i in range(0, n, b):
            idx = perm[i : i + b]
            if tpos + len(idx) > nt:
                tperm, tpos = torch.randperm(nt, generator=gen), 0
            tidx = tperm[tpos : tpos + min(len(idx), nt)]
            tpos += len(tidx)
            p = step / total
            lr = 0.05 / (1 + 10 * p) ** 0.75
            for group in opt.param_groups:
                group["lr"] = lr
            dom = torch.cat([torch.zeros(len(idx)), torch.ones(len(tidx))])
            f_task, d_loss = adv(
                ext(torch.cat([Xs[idx], Xt[tidx]])), dom, p, torch.cat([w[idx], torch.ones(len(tidx))])
            )
            ce = F.cross_entropy(cls(f_task[: len(idx)]), ys[idx], reduction="none")
            c_loss = (w[idx] * ce).sum() / len(idx)
            opt.zero_grad()
            (c_loss + d_loss).backward()
            nn.utils.clip_grad_norm_(params, 0.3)
            opt.step()
            step += 1
            sums = [s + v for s, v in zip(sums, (float(c_loss), float(d_loss), adv.last_accuracy))]
        k = math.ceil(n / b)
        history.append((sums[0] / k, sums[1] / k, sums[2] / k, float(dann_lambda(step / total, 0.7, 5.0)), lr))

    got = [h[k] for h in d.history_ for k in ("class_loss", "domain_loss", "domain_acc", "lam", "lr")]
    assert got == pytest.approx([v for rec in history for v in rec], rel=1e-12, abs=0)
    for mine, ref in zip(d.model_.parameters(), params):
        torch.testing.assert_close(mine, ref, rtol=0, atol=0)
