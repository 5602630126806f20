"""tlkernels.valuation against known answers (float64, per-example autograd as the reference):
in-run values summed over a step are the exact first-order change of the validation loss, TracIn
self-influence is the hand-computed sum, the Gram-corrected batch selection is the brute force."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlkernels import persample, valuation
from tlkernels.valuation._products import _gram_is_cheaper
from tlkernels.valuation.similarity import _directions

DT = torch.float64


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def logistic(seed=0, d=5, c=3):
    torch.manual_seed(seed)
    return nn.Linear(d, c).to(DT)


def mlp(seed=0, d=5, c=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 7), nn.Tanh(), nn.Linear(7, c)).to(DT)


def data(n, seed, d=5, c=3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=DT), torch.randint(0, c, (n,), generator=gen)


def flat_grad(model, batch, reduce="mean"):
    losses = loss_fn(model, batch)
    g = torch.autograd.grad(losses.mean() if reduce == "mean" else losses.sum(), list(model.parameters()))
    return torch.cat([t.flatten() for t in g])


def per_example(model, batch):
    x, y = batch
    return torch.stack([flat_grad(model, (x[i : i + 1], y[i : i + 1])) for i in range(x.shape[0])])


def flat_params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# ---------------------------------------------------------------------------------------------- InRun
def wide(seed=0, d=30, c=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 40), nn.Tanh(), nn.Linear(40, c)).to(DT)


@pytest.mark.parametrize(
    "make, d, n_val, route",
    [(logistic, 5, 9, "dot"), (mlp, 5, 9, "dot"), (wide, 30, 2, "gram")],
)
def test_inrun_step_sums_to_first_order_change_of_val_loss(make, d, n_val, route):
    model = make(d=d)
    x, y = data(40, 1, d=d)
    val = data(n_val, 2, d=d)
    cap = persample.capture(model, loss_fn, (x[:8], y[:8]))
    cap_val = persample.capture(model, loss_fn, val)
    routes = {_gram_is_cheaper(cap.reps[n], cap_val.reps[n]) for n in cap.reps if n.endswith("weight")}
    assert routes == {route == "gram"}  # both ways of forming the products are exercised
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    inrun = valuation.InRun(model, loss_fn, val, optimizer=opt)
    total_first_order = 0.0
    for step in range(5):
        idx = torch.arange(step * 8, step * 8 + 8)
        batch = (x[idx], y[idx])
        g_val = flat_grad(model, val)
        g_i = per_example(model, batch)
        before = flat_params(model)
        opt.zero_grad()
        loss = inrun.step(batch, idx)
        torch.testing.assert_close(loss, loss_fn(model, batch).mean().detach(), rtol=1e-12, atol=1e-12)
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        torch.testing.assert_close(grads, g_i.mean(0), rtol=1e-12, atol=1e-12)
        opt.step()
        change = float(g_val @ (flat_params(model) - before))
        assert abs(float(inrun.last_values.sum()) - change) < 1e-10
        torch.testing.assert_close(inrun.last_values, -0.3 / 8 * (g_i @ g_val), rtol=1e-10, atol=1e-12)
        total_first_order += change
    assert inrun.values.shape == (40,)
    assert abs(float(inrun.values.sum()) - total_first_order) < 1e-10
    assert torch.equal(inrun.counts, torch.ones(40, dtype=torch.int64))


def test_inrun_values_follow_per_group_learning_rates_and_scheduler():
    model = mlp()
    x, y = data(16, 3)
    val = data(6, 4)
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.5},
            {"params": model[2].parameters(), "lr": 0.05},
        ]
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    inrun = valuation.InRun(model, loss_fn, val, optimizer=opt)
    for step in range(3):
        idx = torch.arange(step * 5, step * 5 + 5) % 16
        g_val = flat_grad(model, val)
        before = flat_params(model)
        opt.zero_grad()
        inrun.step((x[idx], y[idx]), idx)
        opt.step()
        sched.step()
        assert abs(float(inrun.last_values.sum()) - float(g_val @ (flat_params(model) - before))) < 1e-10


def test_inrun_small_lr_values_predict_the_actual_val_loss_change():
    model = logistic()
    x, y = data(32, 5)
    val = data(20, 6)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    inrun = valuation.InRun(model, loss_fn, val, optimizer=opt)
    with torch.no_grad():
        before = loss_fn(model, val).mean()
    opt.zero_grad()
    inrun.step((x, y), torch.arange(32))
    opt.step()
    with torch.no_grad():
        after = loss_fn(model, val).mean()
    assert inrun.last_val_loss == pytest.approx(float(before), abs=1e-12)
    predicted = float(inrun.last_values.sum())
    assert abs(float(after - before) - predicted) < 1e-3 * abs(predicted)


def test_valued_optimizer_in_a_plain_loop_matches_manual_steps():
    x, y = data(24, 7)
    val = data(8, 8)
    runs = []
    for wrapped in (True, False):
        model = mlp(seed=3)
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        inrun = valuation.InRun(model, loss_fn, val, optimizer=opt)
        stepper = inrun.wrap() if wrapped else None
        gen = torch.Generator().manual_seed(0)
        for _epoch in range(2):
            perm = torch.randperm(24, generator=gen)
            for i in range(0, 24, 6):
                idx = perm[i : i + 6]
                if wrapped:
                    stepper.step((x[idx], y[idx]), idx)
                else:
                    opt.zero_grad()
                    inrun.step((x[idx], y[idx]), idx)
                    opt.step()
        if wrapped:
            assert stepper.param_groups[0]["lr"] == 0.2  # the wrapped optimizer's attributes
        runs.append((inrun.values.clone(), flat_params(model)))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)
    assert runs[0][0].shape == (24,)


def test_inrun_sum_reduction_and_repeated_ids():
    model = logistic()
    x, y = data(6, 9)
    val = data(4, 10)
    inrun = valuation.InRun(model, loss_fn, val, lr=0.1, reduction="sum")
    g_val = flat_grad(model, val)
    g_i = per_example(model, (x, y))
    idx = torch.tensor([0, 0, 2, 5, 5, 5])
    model.zero_grad()
    inrun.step((x, y), idx)
    expect = torch.zeros(6, dtype=DT).index_add_(0, idx, -0.1 * (g_i @ g_val))
    torch.testing.assert_close(inrun.values, expect, rtol=1e-10, atol=1e-12)
    assert inrun.counts.tolist() == [2, 0, 1, 0, 0, 3]
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads, g_i.sum(0), rtol=1e-12, atol=1e-12)


def test_inrun_errors_name_the_argument():
    model = logistic()
    val = data(4, 0)
    with pytest.raises(ValueError, match="learning rate"):
        valuation.InRun(model, loss_fn, val)
    with pytest.raises(ValueError, match="reduction"):
        valuation.InRun(model, loss_fn, val, lr=0.1, reduction="none")
    inrun = valuation.InRun(model, loss_fn, val, lr=0.1)
    x, y = data(5, 1)
    with pytest.raises(ValueError, match=r"index must be a \(B,\) = \(5,\)"):
        inrun.step((x, y), torch.arange(4))
    with pytest.raises(ValueError, match="index must identify"):
        inrun.step((x, y), None)
    with pytest.raises(ValueError, match="non-negative"):
        inrun.step((x, y), torch.tensor([0, 1, 2, 3, -1]))


# --------------------------------------------------------------------------------------------- TracIn
def checkpoints_of_a_run(model, x, y, lrs):
    states = []
    opt = torch.optim.SGD(model.parameters(), lr=lrs[0])
    for lr in lrs:
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss_fn(model, (x, y)).mean().backward()
        opt.step()
    return states


def test_tracin_self_influence_and_influence_equal_the_hand_computed_sums():
    model = mlp()
    x, y = data(12, 11)
    test = data(4, 12)
    lrs = [0.5, 0.3, 0.1]
    states = checkpoints_of_a_run(model, x, y, lrs)
    final = flat_params(model)
    tracin = valuation.TracIn(model, loss_fn, states, lrs)
    self_inf = tracin.self_influence((x, y))
    infl = tracin.influence((x, y), test)
    target = tracin.target_influence((x, y), test)
    assert torch.equal(flat_params(model), final)  # the model's own state is back
    want_self = torch.zeros(12, dtype=DT)
    want_infl = torch.zeros(12, 4, dtype=DT)
    for state, lr in zip(states, lrs):
        probe = mlp()
        probe.load_state_dict(state)
        g = per_example(probe, (x, y))
        gz = per_example(probe, test)
        want_self += lr * (g * g).sum(1)
        want_infl += lr * g @ gz.T
    torch.testing.assert_close(self_inf, want_self, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(infl, want_infl, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(target, want_infl.mean(1), rtol=1e-10, atol=1e-12)
    ids = torch.arange(100, 112)
    top = valuation.proponents_opponents(infl, 3, index=ids)
    assert top["proponents"].shape == (4, 3)
    for z in range(4):
        order = torch.argsort(want_infl[:, z], descending=True)
        assert top["proponents"][z].tolist() == (ids[order[:3]]).tolist()
        assert top["opponents"][z].tolist() == (ids[order.flip(0)[:3]]).tolist()


def test_tracin_add_checkpoint_in_a_loop_and_errors():
    model = logistic()
    x, y = data(10, 13)
    tracin = valuation.TracIn(model, loss_fn)
    with pytest.raises(ValueError, match="no checkpoints"):
        tracin.self_influence((x, y))
    want = torch.zeros(10, dtype=DT)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(3):
        tracin.add_checkpoint(0.2)
        want += 0.2 * per_example(model, (x, y)).pow(2).sum(1)
        opt.zero_grad()
        loss_fn(model, (x, y)).mean().backward()
        opt.step()
    torch.testing.assert_close(tracin.self_influence((x, y)), want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="one learning rate per checkpoint"):
        valuation.TracIn(model, loss_fn, [model.state_dict()], [0.1, 0.2])
    with pytest.raises(ValueError, match="k must be between 1"):
        valuation.proponents_opponents(torch.zeros(3, 2), 4)


# ------------------------------------------------------------------------------------ batch selection
def objective_from_vectors(g_i, g_val, subset, lr, k):
    """-(first-order + identity-Hessian second-order change of L_val) of the step on `subset`."""
    delta = -lr / k * g_i[list(subset)].sum(0)
    return float(-(g_val @ delta + 0.5 * delta @ delta))


@pytest.mark.parametrize("seed", range(4))
def test_selection_equals_brute_force_on_small_candidate_sets(seed):
    model = mlp(seed=seed)
    cand = data(8, 20 + seed)
    val = data(5, 40 + seed)
    g_i, g_val = per_example(model, cand), flat_grad(model, val)
    lr = 3.0  # large enough for the Gram term to change the choice
    greats = valuation.GREATS(model, loss_fn, val, lr=lr)
    s, gram, _ = greats.scores(cand)
    torch.testing.assert_close(s, g_i @ g_val, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gram, g_i @ g_i.T, rtol=1e-10, atol=1e-12)
    for k in (1, 2, 3, 4):
        # exhaustive: the best subset of every size-k subset, f from the explicit gradients
        best = max(
            itertools.combinations(range(8), k),
            key=lambda S: objective_from_vectors(g_i, g_val, S, lr, k),
        )
        got = valuation.select_batch(s, gram, k, lr, method="exhaustive")
        assert tuple(got.tolist()) == best
        # greedy: each pick the argmax of f(S + i) from the explicit gradients
        chosen = []
        for _ in range(k):
            rest = [i for i in range(8) if i not in chosen]
            chosen.append(
                max(
                    rest,
                    key=lambda i: objective_from_vectors(g_i, g_val, chosen + [i], lr, k),
                )
            )
        assert valuation.select_batch(s, gram, k, lr).tolist() == chosen
        f = float(valuation.batch_objective(s, gram, torch.tensor(chosen), lr / k))
        assert f == pytest.approx(objective_from_vectors(g_i, g_val, chosen, lr, k), rel=1e-10, abs=1e-12)


def test_gram_term_changes_the_choice_for_redundant_candidates():
    # two copies of the best-aligned example: first order picks both, the Gram term only one
    s = torch.tensor([1.0, 1.0, 0.9], dtype=DT)
    gram = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=DT)
    assert sorted(valuation.select_batch(s, gram, 2, lr=2.0).tolist()) == [0, 2]
    assert sorted(valuation.select_batch(s, gram, 2, lr=1e-6).tolist()) == [0, 1]


def test_greats_step_writes_the_selected_mean_gradient():
    model = mlp(seed=1)
    cand = data(10, 50)
    val = data(4, 51)
    g_i = per_example(model, cand)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    greats = valuation.GREATS(model, loss_fn, val, optimizer=opt)
    opt.zero_grad()
    chosen = greats.step(cand, 3)
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads, g_i[chosen].mean(0), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="k must be an int between 1"):
        greats.step(cand, 11)
    with pytest.raises(ValueError, match="exhaustive selection"):
        valuation.select_batch(
            torch.zeros(30, dtype=DT),
            torch.zeros(30, 30, dtype=DT),
            10,
            1.0,
            method="exhaustive",
        )


# ------------------------------------------------------------------------------ gradient similarity
def test_gradient_similarity_exact_and_projected():
    model = mlp(seed=2)
    src = data(10, 60)
    tgt = data(4, 61)
    g_i, g_z = per_example(model, src), per_example(model, tgt)
    cos = F.normalize(g_i, dim=1) @ F.normalize(g_z, dim=1).T
    exact = valuation.gradient_similarity(model, loss_fn, src, tgt)
    torch.testing.assert_close(exact, cos.mean(1), rtol=1e-10, atol=1e-12)
    # the projection is P g with P the documented Rademacher matrix (any chunking)
    params = dict(model.named_parameters())
    rows = _directions(params, 0, 16, seed=5, dim=16)
    P = torch.stack([torch.cat([r[n].flatten() for n in params]) for r in rows])
    for chunk in (16, 5):
        got = valuation.project(model, loss_fn, src, 16, seed=5, chunk=chunk)
        torch.testing.assert_close(got, g_i @ P.T, rtol=1e-10, atol=1e-12)
    assert set(torch.unique(P.abs()).tolist()) == {0.25}
    # with a large dimension the projected cosines approach the exact ones (Johnson-Lindenstrauss)
    proj = valuation.gradient_similarity(model, loss_fn, src, tgt, dim=2048, chunk=512)
    assert (proj - exact).abs().max() < 0.1


def test_adam_preconditioner_and_preconditioned_scores():
    model = mlp(seed=4)
    src, tgt = data(8, 70), data(3, 71)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9), eps=1e-6)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model, src).mean().backward()
        opt.step()
    pre = valuation.adam_preconditioner(opt, model)
    for n, p in model.named_parameters():
        st = opt.state[p]
        want = 1 / ((st["exp_avg_sq"] / (1 - 0.9**3)).sqrt() + 1e-6)
        torch.testing.assert_close(pre[n], want, rtol=1e-12, atol=0)
    d = torch.cat([pre[n].flatten() for n, _ in model.named_parameters()])
    g_i, g_z = per_example(model, src) * d, per_example(model, tgt)
    cos = F.normalize(g_i, dim=1) @ F.normalize(g_z, dim=1).T
    state = {k: v.clone() for k, v in model.state_dict().items()}
    got = valuation.gradient_similarity(
        model,
        loss_fn,
        src,
        tgt,
        checkpoints=[state, state],
        lrs=[0.5, 0.25],
        preconditioners=[pre, pre],
    )
    torch.testing.assert_close(got, 0.75 * cos.mean(1), rtol=1e-10, atol=1e-12)


def test_select_budget():
    scores = torch.tensor([0.1, 0.9, -0.3, 0.5, 0.0])
    assert valuation.select_budget(scores, 2).tolist() == [1, 3]
    assert valuation.select_budget(scores, 0.4).tolist() == [1, 3]
    assert valuation.select_budget(scores, 1, largest=False).tolist() == [2]
    with pytest.raises(ValueError, match="fractional budget"):
        valuation.select_budget(scores, 1.5)
    with pytest.raises(ValueError, match="budget must be between 1"):
        valuation.select_budget(scores, 6)


class TinyEncoder(nn.Module):
    """Embedding + one encoder layer (attention, layer norms) + head: the attention rules."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, idx):
        return self.head(self.enc(self.emb(idx)).mean(1))


def tiny_cnn():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


@pytest.mark.parametrize("arch", ["cnn", "encoder"])
def test_inrun_values_on_conv_and_attention_models(arch):
    torch.manual_seed(0)
    model = (tiny_cnn() if arch == "cnn" else TinyEncoder()).to(DT).eval()
    gen = torch.Generator().manual_seed(1)

    def make(n):
        if arch == "cnn":
            return torch.randn(n, 2, 5, 5, generator=gen, dtype=DT)
        return torch.randint(0, 11, (n, 6), generator=gen)

    batch = (make(7), torch.randint(0, 3, (7,), generator=gen))
    val = (make(3), torch.randint(0, 3, (3,), generator=gen))
    g_val = flat_grad(model, val)
    g_i = torch.stack([flat_grad(model, (batch[0][i : i + 1], batch[1][i : i + 1])) for i in range(7)])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    inrun = valuation.InRun(model, loss_fn, val, optimizer=opt)
    opt.zero_grad()
    inrun.step(batch, torch.arange(7))
    torch.testing.assert_close(inrun.last_values, -0.1 / 7 * (g_i @ g_val), rtol=1e-9, atol=1e-12)
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads, g_i.mean(0), rtol=1e-10, atol=1e-12)
