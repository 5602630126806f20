"""Whole-model per-sample products against torch.func per-sample gradients (float64)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlkernels import persample, reference
from tlkernels.persample import reps as persample_reps


# ----------------------------------------------------------------------------- models
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 7), nn.Linear(7, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class SeqModel(nn.Module):
    """Linear over (B, T, I) inputs, LayerNorm over features, a bias-free projection."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.out = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        return self.out(self.norm(torch.tanh(self.inp(x))))


class ConvNet(nn.Module):
    def __init__(self, dims=2):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.c1 = conv(4, 6, 3, stride=2, padding=1, dilation=1, groups=2)
        self.c2 = conv(
            6,
            6,
            3,
            padding="same",
            padding_mode="reflect" if dims < 3 else "zeros",
            dilation=2,
        )
        self.gn = nn.GroupNorm(3, 6)
        self.c3 = conv(6, 4, 2, dilation=1, bias=False)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.c1(x))
        h = self.gn(torch.tanh(self.c2(h)))
        h = torch.tanh(self.c3(h)).flatten(2).mean(2)
        return self.head(h)


class TokenModel(nn.Module):
    """Embedding with padding_idx, a Linear used twice (tied), and an output layer tied to the
    embedding table."""

    def __init__(self, vocab=11, dim=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, idx):
        h = self.emb(idx)
        h = torch.tanh(self.mix(h))
        h = torch.tanh(self.mix(h))  # the same module twice
        return self.out(h)  # (B, T, vocab)


class Scale(nn.Module):
    """A module the capture does not know: y = x * scale + shift."""

    def __init__(self, n):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(n))
        self.shift = nn.Parameter(torch.randn(n))

    def forward(self, x):
        return x * self.scale + self.shift


class WithUnknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.scale, self.bn, self.head = (
            nn.Linear(5, 4),
            Scale(4),
            nn.BatchNorm1d(4),
            nn.Linear(4, 3),
        )

    def forward(self, x):
        return self.head(self.bn(torch.tanh(self.scale(self.fc(x)))))


# ----------------------------------------------------------------------------- losses
def ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def seq_loss_mean(model, batch):
    x, y = batch
    return F.cross_entropy(model(x).transpose(1, 2), y, reduction="none").mean(1)


def seq_loss_sum(model, batch):
    x, y = batch
    return F.cross_entropy(model(x).transpose(1, 2), y, reduction="none").sum(1)


def token_loss(model, batch):
    idx, y = batch
    logits = model(idx)
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)


def make_case(name, b, gen, dtype=torch.float64):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    if name == "mlp":
        model, loss = MLP(), ce_loss
        batch = (
            torch.randn(b, 5, generator=gen),
            torch.randint(0, 3, (b,), generator=gen),
        )
    elif name in ("seq_mean", "seq_sum"):
        model, loss = SeqModel(), seq_loss_mean if name == "seq_mean" else seq_loss_sum
        batch = (
            torch.randn(b, 5, 4, generator=gen),
            torch.randint(0, 3, (b, 5), generator=gen),
        )
    elif name.startswith("conv"):
        dims = int(name[-2])
        model, loss = ConvNet(dims), ce_loss
        size = {1: (9,), 2: (7, 8), 3: (5, 6, 5)}[dims]
        batch = (
            torch.randn(b, 4, *size, generator=gen),
            torch.randint(0, 3, (b,), generator=gen),
        )
    elif name == "tokens":
        model, loss = TokenModel(), token_loss
        idx = torch.randint(0, 11, (b, 7), generator=gen)
        idx[:, -2:] = 0  # padding positions
        batch = (idx, torch.randint(0, 11, (b, 7), generator=gen))
    elif name == "unknown":
        model, loss = WithUnknown(), ce_loss
        model.bn.eval()
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
        batch = (
            torch.randn(b, 5, generator=gen),
            torch.randint(0, 3, (b,), generator=gen),
        )
    else:
        raise AssertionError(name)
    model = model.to(dtype)
    batch = tuple(t.to(dtype) if t.is_floating_point() else t for t in batch)
    return model, loss, batch


CASES = [
    "mlp",
    "seq_mean",
    "seq_sum",
    "conv1d",
    "conv2d",
    "conv3d",
    "tokens",
    "unknown",
]


@pytest.fixture(params=["ghost", "materialise"])
def cost_rule(request, monkeypatch):
    """Both branches of the per-layer ghost-vs-materialise choice."""
    monkeypatch.setattr(persample_reps, "ghost_is_cheaper", lambda *a: request.param == "ghost")
    return request.param


def flat(grads: dict, names) -> torch.Tensor:
    return torch.cat([grads[n].flatten(1) for n in names], 1)


@pytest.mark.parametrize("case", CASES)
def test_products_match_torch_func(case, cost_rule):
    gen = torch.Generator().manual_seed(CASES.index(case))
    model, loss, batch = make_case(case, 5, gen)
    ref = reference.model_per_sample_grads(model, loss, batch)
    names = list(ref)
    cap = persample.capture(model, loss, batch)
    assert set(cap.params) == set(names)

    got = cap.per_sample_grads()
    for n in names:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=1e-12, msg=f"per-sample grad of {n}")

    vectors = [
        {n: torch.randn(p.shape, dtype=torch.float64, generator=gen) for n, p in cap.params.items()} for _ in range(3)
    ]
    want = torch.stack(
        [flat(ref, names) @ torch.cat([v[n].flatten() for n in names]) for v in vectors],
        1,
    )
    torch.testing.assert_close(cap.dot(vectors), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(cap.dot(vectors[0]), want[:, 0], rtol=1e-10, atol=1e-12)

    torch.testing.assert_close(cap.norms(), flat(ref, names).pow(2).sum(1), rtol=1e-10, atol=1e-12)

    model2_batch = make_case(case, 3, torch.Generator().manual_seed(100 + CASES.index(case)))[2]
    ref2 = reference.model_per_sample_grads(model, loss, model2_batch)
    cap2 = persample.capture(model, loss, model2_batch)
    torch.testing.assert_close(cap.gram(cap2), flat(ref, names) @ flat(ref2, names).T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", ["mlp", "seq_mean", "conv2d", "tokens", "unknown"])
def test_accumulate_grad_equals_weighted_backward(case):
    gen = torch.Generator().manual_seed(7)
    model, loss, batch = make_case(case, 6, gen)
    w = torch.rand(6, dtype=torch.float64, generator=gen)
    w[2] = 0.0  # zero weights are common (SOSELETO's alpha) and must not be divided by
    model.zero_grad(set_to_none=True)
    (loss(model, batch) * w).sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    cap = persample.capture(model, loss, batch)
    assert all(p.grad is None for p in model.parameters()), "capture must not touch .grad"
    cap.accumulate_grad(w)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], rtol=1e-10, atol=1e-12, msg=n)
    cap.accumulate_grad(w)  # accumulates like autograd
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * want[n], rtol=1e-10, atol=1e-12, msg=n)


def test_float32_and_functional_api():
    gen = torch.Generator().manual_seed(3)
    model, loss, batch = make_case("seq_mean", 4, gen, dtype=torch.float32)
    ref = reference.model_per_sample_grads(
        model.double(),
        loss,
        tuple(t.double() if t.is_floating_point() else t for t in batch),
    )
    model.float()
    names = list(ref)
    v = {n: torch.randn(p.shape, generator=gen) for n, p in model.named_parameters()}
    s = persample.grad_dot(model, loss, batch, v)
    assert s.dtype == torch.float32 and s.shape == (4,)
    want = flat(ref, names) @ torch.cat([v[n].double().flatten() for n in names])
    torch.testing.assert_close(s.double(), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        persample.grad_norms(model, loss, batch).double(),
        flat(ref, names).pow(2).sum(1),
        rtol=1e-4,
        atol=1e-5,
    )
    g = persample.grad_gram(model, loss, batch, batch)
    torch.testing.assert_close(g.double(), flat(ref, names) @ flat(ref, names).T, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_streamed_grad_dot_equals_capture_dot(case):
    """grad_dot computes each layer's share during the backward (no capture kept): same numbers."""
    gen = torch.Generator().manual_seed(11 + CASES.index(case))
    model, loss, batch = make_case(case, 5, gen)
    vectors = [
        {n: torch.randn(p.shape, dtype=torch.float64, generator=gen) for n, p in model.named_parameters()}
        for _ in range(2)
    ]
    vectors[1].pop(next(iter(vectors[1])))  # a map that leaves one parameter out (zero there)
    want = persample.capture(model, loss, batch).dot(vectors)
    torch.testing.assert_close(persample.grad_dot(model, loss, batch, vectors), want, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(
        persample.grad_dot(model, loss, batch, vectors[0]),
        want[:, 0],
        rtol=1e-12,
        atol=1e-13,
    )


def test_streamed_grad_dot_handles_inplace_relu_and_unused_layers():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(2, 3, 3),
                nn.ReLU(inplace=True),
                nn.Flatten(),
                nn.Linear(3 * 4 * 4, 5),
                nn.ReLU(inplace=True),
                nn.Linear(5, 3),
            )
            self.unused_out = nn.Linear(5, 2)  # called, but its output never reaches the losses

        def forward(self, x):
            self.unused_out(torch.ones(x.shape[0], 5, dtype=x.dtype))
            return self.body(x)

    model = Net().double()
    gen = torch.Generator().manual_seed(1)
    batch = (
        torch.randn(4, 2, 6, 6, dtype=torch.float64, generator=gen),
        torch.randint(0, 3, (4,), generator=gen),
    )
    ref = reference.model_per_sample_grads(model, ce_loss, batch)
    v = {n: torch.randn(p.shape, dtype=torch.float64, generator=gen) for n, p in model.named_parameters()}
    want = sum(ref[n].flatten(1) @ v[n].flatten() for n in ref)
    torch.testing.assert_close(persample.grad_dot(model, ce_loss, batch, v), want, rtol=1e-10, atol=1e-12)


def test_streamed_grad_dot_keeps_less_memory_than_a_capture():
    """The streamed product frees each layer's output gradient at once: its peak allocation on a
    deep conv stack is below the capture's (which keeps them all for later products)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    layers = []
    for _ in range(6):
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.Tanh()]
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Tanh(),
        *layers,
        nn.Flatten(),
        nn.Linear(8 * 16 * 16, 4),
    )
    batch = (torch.randn(16, 3, 16, 16), torch.randint(0, 4, (16,)))
    v = {n: torch.randn(p.shape) for n, p in model.named_parameters()}

    def peak(fn):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        live = top = 0
        for _, nbytes in sorted(
            (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
        ):
            live += nbytes
            top = max(top, live)
        return top

    # verify=False: the one-off invariant check (a capture with its graph kept) is not what is measured
    streamed = peak(lambda: persample.grad_dot(model, ce_loss, batch, v, verify=False))
    captured = peak(lambda: persample.capture(model, ce_loss, batch, verify=False).dot(v))
    one_map = 16 * 8 * 16 * 16 * 4  # bytes of one layer's activation
    assert streamed < captured - 4 * one_map, (streamed, captured)


def test_dot_over_a_subset_of_parameters():
    gen = torch.Generator().manual_seed(4)
    model, loss, batch = make_case("mlp", 5, gen)
    ref = reference.model_per_sample_grads(model, loss, batch)
    v = torch.randn(model.fc2.weight.shape, dtype=torch.float64, generator=gen)
    s = persample.grad_dot(model, loss, batch, {"fc2.weight": v})
    torch.testing.assert_close(s, ref["fc2.weight"].flatten(1) @ v.flatten(), rtol=1e-10, atol=1e-12)
    with pytest.raises(KeyError, match="not trainable parameters"):
        persample.grad_dot(model, loss, batch, {"nope": v})
    with pytest.raises(ValueError, match=r"vectors\['fc2.weight'\] must be a tensor of shape \(3, 7\)"):
        persample.grad_dot(model, loss, batch, {"fc2.weight": v.T})


def test_inplace_activation_after_a_layer():
    """ReLU(inplace=True) modifies Linear / Conv outputs: the capture reruns with cloned outputs."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5),
        nn.ReLU(inplace=True),
        nn.Linear(5, 3),
    ).double()
    gen = torch.Generator().manual_seed(1)
    batch = (
        torch.randn(4, 2, 6, 6, dtype=torch.float64, generator=gen),
        torch.randint(0, 3, (4,), generator=gen),
    )
    ref = reference.model_per_sample_grads(model, ce_loss, batch)
    got = persample.capture(model, ce_loss, batch).per_sample_grads()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=1e-12, msg=n)


def test_frozen_parameters_are_left_out():
    gen = torch.Generator().manual_seed(5)
    model, loss, batch = make_case("mlp", 4, gen)
    model.fc1.weight.requires_grad_(False)
    cap = persample.capture(model, loss, batch)
    assert "fc1.weight" not in cap.params and "fc1.bias" in cap.params


def test_names_follow_named_parameters_and_dot_sums_in_their_order():
    """capture walks the model once for its layers and the parameter names: the names are those of
    named_parameters() (a shared parameter under its first name, frozen ones left out); dot adds
    the parameters' terms in the order of cap.params, so s is the same in every process."""
    torch.manual_seed(0)
    shared = nn.Linear(6, 6)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), shared, nn.Tanh(), shared, nn.Linear(6, 3)).float()
    model[5].bias.requires_grad_(False)
    gen = torch.Generator().manual_seed(2)
    batch = (torch.randn(9, 5, generator=gen), torch.randint(0, 3, (9,), generator=gen))
    cap = persample.capture(model, ce_loss, batch)
    want = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(cap.params) == sorted(want) and "2.weight" in cap.params and "4.weight" not in cap.params
    assert len(cap.reps["2.weight"]) == 2  # the shared layer, called twice
    v = {n: torch.randn(p.shape, generator=gen) for n, p in cap.params.items()}
    s = torch.zeros(9)
    for n in cap.params:
        for rep in cap.reps[n]:
            s += rep.dot(v[n])
    assert torch.equal(cap.dot(v), s)
    torch.testing.assert_close(cap.dot([v, v]), torch.stack([s, s], 1))  # (V = 2 GEMMs round differently)


def test_batchnorm_in_training_mode_is_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    batch = (torch.randn(5, 3), torch.randint(0, 2, (5,)))
    with pytest.raises(persample.UnsupportedModuleError, match="GroupNorm or LayerNorm.*eval"):
        persample.capture(model, ce_loss, batch)


class OwnMatmul(nn.Module):
    """A module the capture does not know that multiplies its own matrix from the left (W x^T: not
    a linear map of the batch's rows the capture can record)."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, n))

    def forward(self, x):
        return (self.weight @ x.T).T


def test_unknown_module_without_fallback_is_refused_by_name():
    model = nn.Sequential(nn.Linear(5, 4), OwnMatmul(4), nn.Tanh(), nn.Linear(4, 3))
    batch = (torch.randn(5, 5), torch.randint(0, 3, (5,)))
    with pytest.raises(
        persample.UnsupportedModuleError,
        match=r"module 1 \(OwnMatmul\).*weight enters matmul.*fallback=True",
    ):
        persample.capture(model, ce_loss, batch, fallback=False)
    with pytest.warns(persample.PerSampleFallbackWarning, match=r"1 \(OwnMatmul\)"):
        persample.capture(model, ce_loss, batch)


def test_unknown_module_broadcasting_its_parameters_is_native():
    model = WithUnknown().eval()
    batch = (torch.randn(5, 5), torch.randint(0, 3, (5,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", persample.PerSampleFallbackWarning)
        persample.verify(model, ce_loss, batch, fallback=False)


def test_bad_losses_and_inplace_outputs():
    model = MLP()
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"per-sample losses of shape \(B,\)"):
        persample.capture(model, lambda m, b: m(b).sum(), x)

    class ModifiesInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.tanh(self.a(x))
            out = self.b(h)
            h.mul_(2)  # the input of b, changed after b used it
            return out + h.sum(1, keepdim=True)

    with pytest.raises(
        persample.UnsupportedModuleError,
        match="input of a Linear was modified in place",
    ):
        persample.capture(ModifiesInput(), lambda m, b: m(b).sum(1), x)
    with pytest.raises(ValueError, match="leading dimension is not the batch size"):
        persample.capture(model, lambda m, b: m(b.reshape(2, 2, 5)).sum((1, 2)).repeat(2), x)
