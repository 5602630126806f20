"""SOSELETO: one step against a hand computation, resumption, groups, and a known answer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from tlkernels import reference
from tlkernels.data import make_noisy_2d
from tlkernels.selection import Soseleto


def tiny(seed=0, shared=True):
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Linear(2, 8), nn.Tanh())
    head = nn.Linear(8, 2)
    return backbone, head, (head if shared else nn.Linear(8, 2))


@pytest.mark.parametrize("alpha_step", ["normalized", "raw"])
@pytest.mark.parametrize("shared", [True, False])
def test_one_step_matches_the_equations(alpha_step, shared):
    gen = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(6, 2, generator=gen), torch.randint(0, 2, (6,), generator=gen)
    xt, yt = torch.randn(4, 2, generator=gen), torch.randint(0, 2, (4,), generator=gen)
    backbone, sh, th = tiny(shared=shared)
    m = Soseleto(backbone, sh, th, 10, lr=0.1, lr_alpha=0.3, alpha_step=alpha_step, alpha_init=0.5)
    snet0, tnet0 = copy.deepcopy(m.source_net), copy.deepcopy(m.target_net)
    index = torch.tensor([0, 3, 4, 7, 8, 9])

    # by hand: per-sample grads (torch.func), target grad, s, alpha, weighted SGD step
    def loss(model, batch):
        return F.cross_entropy(model(batch[0]), batch[1], reduction="none")

    Q = reference.model_per_sample_grads(snet0, loss, (xs, ys))
    lt = F.cross_entropy(tnet0(xt), yt)
    theta = [n for n, _ in snet0.named_parameters() if n.startswith("backbone") or shared]
    g = dict(zip(theta, torch.autograd.grad(lt, [dict(tnet0.named_parameters())[n] for n in theta], retain_graph=True)))
    s = sum(Q[n].flatten(1) @ g[n].flatten() for n in theta) / 6
    if alpha_step == "normalized":
        step = 0.3 * s / s.pow(2).mean().sqrt()
    else:
        step = 0.3 * 0.1 * s
    alpha = torch.full((10,), 0.5)
    alpha[index] = (alpha[index] + step).clamp(0, 1)

    m.step((xs, ys), (xt, yt), index)
    torch.testing.assert_close(m.alpha_, alpha, rtol=1e-5, atol=1e-6)
    # theta, phi_s: SGD (first step: momentum buffer = grad) on sum_j alpha_j l_j / B
    for n, p0 in snet0.named_parameters():
        want = p0 - 0.1 * sum(alpha[index][j] * Q[n][j] for j in range(6)) / 6
        torch.testing.assert_close(dict(m.source_net.named_parameters())[n], want, rtol=1e-5, atol=1e-6, msg=n)
    if not shared:  # phi_t stepped on the target loss
        gt = torch.autograd.grad(lt, list(tnet0.head.parameters()))
        for p, p0, gg in zip(m.target_head.parameters(), tnet0.head.parameters(), gt):
            torch.testing.assert_close(p, p0 - 0.1 * gg, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", [True, False])
def test_frozen_parameters_stay_frozen_and_alpha_still_moves(shared):
    """A frozen first layer (fine-tuning a pretrained backbone) gets no target gradient and no
    step; the trainable rest still defines s = Q^T g."""
    gen = torch.Generator().manual_seed(2)
    xs, ys = torch.randn(6, 2, generator=gen), torch.randint(0, 2, (6,), generator=gen)
    xt, yt = torch.randn(4, 2, generator=gen), torch.randint(0, 2, (4,), generator=gen)
    backbone, sh, th = tiny(shared=shared)
    backbone[0].weight.requires_grad_(False)
    frozen = backbone[0].weight.detach().clone()
    m = Soseleto(backbone, sh, th, 6, lr=0.1, lr_alpha=0.3, alpha_init=0.5)
    m.step((xs, ys), (xt, yt), torch.arange(6))
    assert torch.equal(backbone[0].weight, frozen)
    assert not torch.equal(m.alpha_, torch.full((6,), 0.5))


@pytest.mark.parametrize("shared", [True, False])
def test_step_puts_both_nets_in_training_mode(shared):
    """step() calls Module.train() only where some module is not training: after predict() (eval)
    and after the user switches one layer to eval, every module of both nets trains again."""
    backbone, head, target_head = tiny(seed=0, shared=shared)
    backbone.append(nn.Dropout(0.1))
    m = Soseleto(backbone, head, target_head, 6)
    gen = torch.Generator().manual_seed(1)
    source = (torch.randn(6, 2, generator=gen), torch.randint(0, 2, (6,), generator=gen))
    target = (torch.randn(4, 2, generator=gen), torch.randint(0, 2, (4,), generator=gen))
    m.step(source, target, torch.arange(6))  # predict needs a fitted estimator
    m.predict(target[0])
    assert not any(mod.training for mod in m.target_net.modules())
    m.step(source, target, torch.arange(6))
    nets = (m.source_net, m.target_net)
    assert all(mod.training for net in nets for mod in net.modules())
    backbone[2].eval()
    m.step(source, target, torch.arange(6))
    assert all(mod.training for net in nets for mod in net.modules())


def test_resume_gives_the_uninterrupted_continuation():
    src, tgt = make_noisy_2d(n_source=90, n_target=20, random_state=3)

    def make():
        b, h, _ = tiny(seed=5)
        return Soseleto(b, h, h, 90, batch_size=16, target_batch_size=8, random_state=7)

    full = make().set_params(epochs=3).fit(src, tgt)
    part = make().set_params(epochs=1).fit(src, tgt)
    state = copy.deepcopy(part.state_dict())
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_params(epochs=2).fit(src, tgt)
    assert torch.equal(full.alpha_, resumed.alpha_)
    for a, b in zip(full.source_net.parameters(), resumed.source_net.parameters()):
        assert torch.equal(a, b)
    assert full.step_ == resumed.step_ and len(resumed.history_) == 3


def test_group_weights_sum_their_members():
    gen = torch.Generator().manual_seed(2)
    xs, ys = torch.randn(6, 2, generator=gen), torch.randint(0, 2, (6,), generator=gen)
    xt, yt = torch.randn(4, 2, generator=gen), torch.randint(0, 2, (4,), generator=gen)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    b1, h1, _ = tiny(seed=3)
    b2, h2, _ = tiny(seed=3)
    per_example = Soseleto(b1, h1, h1, 8, alpha_init=0.5, alpha_step="raw", lr_alpha=1.0)
    grouped = Soseleto(b2, h2, h2, 8, groups=groups, alpha_init=0.5, alpha_step="raw", lr_alpha=1.0)
    index = torch.arange(6)
    per_example.step((xs, ys), (xt, yt), index)
    grouped.step((xs, ys), (xt, yt), index)
    delta = per_example.alpha_[:6] - 0.5  # no clipping at these step sizes
    assert (delta.abs() < 0.5).all()
    want = 0.5 + torch.zeros(3).index_add_(0, groups[:6], delta)
    torch.testing.assert_close(grouped.alpha_, want, rtol=1e-5, atol=1e-6)
    assert grouped.example_alpha_.shape == (8,)


def test_finds_the_flipped_labels_of_the_synthetic_set():
    """Known answer (seed experiment a): alpha separates clean from flipped labels."""
    src, tgt = make_noisy_2d(random_state=0)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
    head = nn.Linear(64, 2)
    m = Soseleto(
        backbone, head, head, 500, lr=0.1, lr_alpha=0.05, batch_size=32, target_batch_size=25, random_state=0, epochs=25
    ).fit(src, tgt)
    auroc = roc_auc_score((~src.flipped).numpy(), m.alpha_.numpy())
    assert auroc > 0.85, auroc
    assert m.score(tgt.X, tgt.y) > 0.8


def test_bad_arguments():
    b, h, _ = tiny()
    with pytest.raises(ValueError, match="alpha_step"):
        Soseleto(b, h, h, 10, alpha_step="fast")
    with pytest.raises(ValueError, match="n_source"):
        Soseleto(b, h, h, 0)
    with pytest.raises(ValueError, match="max_steps"):
        Soseleto(b, h, h, 10, schedule="cosine")
    with pytest.raises(ValueError, match="groups"):
        Soseleto(b, h, h, 10, groups=[0, 1])
    m = Soseleto(b, h, h, 10, epochs=1)
    with pytest.raises(ValueError, match="n_source=10"):
        m.fit((torch.randn(9, 2), torch.zeros(9, dtype=torch.long)), (torch.randn(3, 2), torch.zeros(3)))
    with pytest.raises(ValueError, match="NaN"):
        m.fit(
            (torch.full((10, 2), float("nan")), torch.zeros(10, dtype=torch.long)), (torch.randn(3, 2), torch.zeros(3))
        )


def _dist_worker(rank: int, world: int, port: int, shards, target, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        b, h, _ = tiny(seed=11)
        xs, ys = shards[rank]
        m = Soseleto(
            b,
            h,
            h,
            len(xs),
            batch_size=len(xs),
            target_batch_size=len(target[0]),
            lr_alpha=0.2,
            distributed=True,
            random_state=0,
            epochs=4,
        )
        m.fit((xs, ys), target)
        out[rank] = (m.alpha_.clone(), [p.detach().clone() for p in m.source_net.parameters()])
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process():
    """Each rank holds half the source; with whole-shard batches the 2-process run equals the
    1-process run on the concatenated source (up to float summation order)."""
    import socket

    import torch.multiprocessing as mp

    src, tgt = make_noisy_2d(n_source=40, n_target=12, random_state=4)
    shards = [(src.X[:20], src.y[:20]), (src.X[20:], src.y[20:])]
    target = (tgt.X, tgt.y)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_dist_worker, args=(2, port, shards, target, out), nprocs=2, join=True)

    b, h, _ = tiny(seed=11)
    single = Soseleto(b, h, h, 40, batch_size=40, target_batch_size=12, lr_alpha=0.2, random_state=0, epochs=4)
    # the single process must see the shards' examples in one batch: order inside a batch is a sum
    single.fit((src.X, src.y), target)
    alpha = torch.cat([out[0][0], out[1][0]])
    torch.testing.assert_close(alpha, single.alpha_, rtol=1e-4, atol=1e-5)
    for p_single, p0, p1 in zip(single.source_net.parameters(), out[0][1], out[1][1]):
        assert torch.equal(p0, p1), "ranks must hold identical models"
        torch.testing.assert_close(p0, p_single, rtol=1e-4, atol=1e-5)


def test_lr_alpha_zero_keeps_alpha_and_negative_is_refused():
    torch.manual_seed(0)
    backbone, head = nn.Linear(4, 6), nn.Linear(6, 3)
    Xs, ys = torch.randn(24, 4), torch.randint(0, 3, (24,))
    Xt, yt = torch.randn(8, 4), torch.randint(0, 3, (8,))
    m = Soseleto(backbone, head, head, 24, lr_alpha=0.0, alpha_init=0.7, batch_size=8, target_batch_size=8, epochs=2)
    m.fit((Xs, ys), (Xt, yt))
    assert torch.equal(torch.as_tensor(m.alpha_), torch.full((24,), 0.7))
    with pytest.raises(ValueError, match="lr_alpha must be >= 0"):
        Soseleto(backbone, head, head, 24, lr_alpha=-0.1)


@pytest.mark.parametrize("shared", [True, False])
def test_source_values_are_the_first_order_change_of_the_target_loss(shared):
    """One SGD step (momentum's first step is plain SGD): sum_j value_j = <dL_t/dtheta, theta_1 - theta_0>."""
    gen = torch.Generator().manual_seed(2)
    xs, ys = torch.randn(6, 2, generator=gen).double(), torch.randint(0, 2, (6,), generator=gen)
    xt, yt = torch.randn(4, 2, generator=gen).double(), torch.randint(0, 2, (4,), generator=gen)
    backbone, sh, th = tiny(shared=shared)
    backbone, sh, th = backbone.double(), sh.double(), th.double()
    m = Soseleto(backbone, sh, th, 10, lr=0.1, lr_alpha=0.3, alpha_init=0.5, optimizer="sgd")
    tnet0 = copy.deepcopy(m.target_net)
    theta = [n for n, _ in tnet0.named_parameters() if n.startswith("backbone") or shared]
    lt = F.cross_entropy(tnet0(xt), yt)
    g = torch.autograd.grad(lt, [dict(tnet0.named_parameters())[n] for n in theta])
    index = torch.tensor([0, 3, 4, 7, 8, 9])
    m.step((xs, ys), (xt, yt), index)
    params = dict(m.target_net.named_parameters())
    delta = sum((gi * (params[n] - dict(tnet0.named_parameters())[n])).sum() for gi, n in zip(g, theta))
    v = m.source_values_
    assert v.dtype == torch.float64 and torch.count_nonzero(v[[1, 2, 5, 6]]) == 0
    torch.testing.assert_close(v.sum(), delta.detach(), rtol=1e-9, atol=1e-14)
