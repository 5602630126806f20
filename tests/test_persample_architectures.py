"""Per-sample products on the architectures people run, against a per-sample autograd loop
(float64): attention (every MultiheadAttention option), encoder / decoder stacks with masks,
recurrent layers with every output read, BERT- and GPT-2-shaped models, parameters owned by the
root, and the model zoos (transformers, torchvision, timm) when installed. Sequence-first
models use T == B, so a batch axis taken for another cannot pass unnoticed.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlkernels import persample, reference
from tlkernels.persample import PerSampleCheckError, PerSampleFallbackWarning, Rule
from tlkernels.persample.reps import DenseRep

B = T = 4  # equal on purpose: a batch axis confused with the time axis must fail
E = 8
DT = torch.float64


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def labels(n=B, classes=3, seed=0):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def randn(*shape, seed=0):
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """One MultiheadAttention, read through its output and (optionally) its weights."""

    def __init__(self, batch_first, cross=False, masks=(), use_weights=False, **options):
        super().__init__()
        self.batch_first, self.cross, self.masks, self.use_weights = (
            batch_first,
            cross,
            masks,
            use_weights,
        )
        kdim, vdim = options.get("kdim"), options.get("vdim")
        self.kdim, self.vdim = kdim or E, vdim or E
        self.att = nn.MultiheadAttention(E, 2, batch_first=batch_first, **options)
        self.head = nn.Linear(E, 3)

    def forward(self, x):
        s = T + 1 if self.cross else T
        kw = {}
        if "key_padding_mask" in self.masks:
            kpm = torch.zeros(B, s, dtype=torch.bool)
            kpm[0, -1] = kpm[2, -2:] = True
            kw["key_padding_mask"] = kpm
        if "float_mask" in self.masks:
            kw["attn_mask"] = randn(T, s, seed=5)
        if "bool_mask_3d" in self.masks:
            m = torch.zeros(B * 2, T, s, dtype=torch.bool)
            m[1, :, 0] = m[5, 1:, -1] = True
            kw["attn_mask"] = m
        if "causal" in self.masks:
            kw["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(T, dtype=DT)
            kw["is_causal"] = True
            kw["need_weights"] = False
        if self.cross:
            k, v = randn(B, s, self.kdim, seed=3), randn(B, s, self.vdim, seed=4)
            if not self.batch_first:
                k, v = k.transpose(0, 1), v.transpose(0, 1)
            out, w = self.att(x, k, v, average_attn_weights=False, **kw)
        else:
            out, w = self.att(x, x, x, **kw)
        out = out if self.batch_first else out.transpose(0, 1)
        logits = self.head(out.mean(1))
        if self.use_weights and w is not None:
            logits = logits + w.flatten(1).pow(2).sum(1, keepdim=True)
        return logits


class Stack(nn.Module):
    """nn.TransformerEncoder or nn.Transformer with masks, both batch_first settings."""

    def __init__(self, kind, batch_first):
        super().__init__()
        self.kind, self.batch_first = kind, batch_first
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on nested tensors for sequence-first stacks
            if kind == "encoder":
                layer = nn.TransformerEncoderLayer(E, 2, 16, dropout=0.0, batch_first=batch_first, norm_first=True)
                self.net = nn.TransformerEncoder(layer, 2)
            else:
                self.net = nn.Transformer(E, 2, 1, 2, 16, dropout=0.0, batch_first=batch_first)
        self.head = nn.Linear(E, 3)

    def forward(self, x):
        causal = nn.Transformer.generate_square_subsequent_mask(T, dtype=DT)
        kpm = torch.zeros(B, T, dtype=torch.bool)
        kpm[1, -1] = True
        if self.kind == "encoder":
            out = self.net(x, mask=causal, src_key_padding_mask=kpm, is_causal=True)
        else:
            out = self.net(
                x,
                x * 0.5,
                tgt_mask=causal,
                src_key_padding_mask=kpm,
                memory_key_padding_mask=kpm,
            )
        out = out if self.batch_first else out.transpose(0, 1)
        return self.head(out.mean(1))


class Recurrent(nn.Module):
    def __init__(self, cls, read, batch_first, **options):
        super().__init__()
        self.rnn, self.read, self.batch_first = (
            cls(5, 6, batch_first=batch_first, **options),
            read,
            batch_first,
        )
        self.head = nn.Linear(options.get("proj_size") or 6, 3)

    def forward(self, x):
        out, state = self.rnn(x)
        if self.read == "out":
            out = out if self.batch_first else out.transpose(0, 1)
            return self.head(out[..., : self.head.in_features].mean(1))
        h_n, c_n = state if isinstance(state, tuple) else (state, None)
        last = h_n[-1] if self.read == "h_n" else c_n[-1][..., : self.head.in_features]
        return self.head(last)


class BertShaped(nn.Module):
    """Token + (1, T) position + token-type embeddings, LayerNorm, encoder layers, pooler."""

    def __init__(self, vocab=30):
        super().__init__()
        self.tok, self.pos, self.typ = (
            nn.Embedding(vocab, E),
            nn.Embedding(16, E),
            nn.Embedding(2, E),
        )
        self.norm = nn.LayerNorm(E)
        layer = nn.TransformerEncoderLayer(E, 2, 16, dropout=0.0, batch_first=True, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.pool, self.cls = nn.Linear(E, E), nn.Linear(E, 3)
        self.register_buffer("position_ids", torch.arange(16).unsqueeze(0), persistent=False)

    def forward(self, ids):
        t = ids.shape[1]
        types = torch.zeros(1, t, dtype=torch.long).expand(ids.shape[0], t)
        h = self.norm(self.tok(ids) + self.pos(self.position_ids[:, :t]) + self.typ(types))
        h = self.enc(h, src_key_padding_mask=ids == 0)
        return self.cls(torch.tanh(self.pool(h[:, 0])))


class Conv1DLike(nn.Module):
    """y = x W + b with W stored (I, O), as GPT-2's Conv1D; handled through a registered rule."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.2)
        self.bias = nn.Parameter(torch.randn(n_out) * 0.1)

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class Gpt2Shaped(nn.Module):
    """Token + (1, T) position embeddings, causal blocks of Conv1D-like projections, LM head tied
    to the token embedding through a Linear sharing its weight."""

    def __init__(self, vocab=30):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, E), nn.Embedding(16, E)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(
                nn.ModuleDict(
                    dict(
                        ln1=nn.LayerNorm(E),
                        attn=Conv1DLike(E, 3 * E),
                        proj=Conv1DLike(E, E),
                        ln2=nn.LayerNorm(E),
                        fc=Conv1DLike(E, 2 * E),
                        out=Conv1DLike(2 * E, E),
                    )
                )
            )
        self.ln_f = nn.LayerNorm(E)
        self.lm_head = nn.Linear(E, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids):
        b, t = ids.shape
        h = self.wte(ids) + self.wpe(torch.arange(t).unsqueeze(0))
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        for blk in self.blocks:
            q, k, v = blk["attn"](blk["ln1"](h)).split(E, -1)
            q, k, v = (z.view(b, t, 2, E // 2).transpose(1, 2) for z in (q, k, v))
            a = (q @ k.transpose(-1, -2) / (E // 2) ** 0.5).masked_fill(causal, float("-inf")).softmax(-1)
            h = h + blk["proj"]((a @ v).transpose(1, 2).reshape(b, t, E))
            h = h + blk["out"](F.gelu(blk["fc"](blk["ln2"](h))))
        return self.lm_head(self.ln_f(h))


def lm_loss(model, ids):
    logits = model(ids)[:, :-1]
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    return per_token.view(ids.shape[0], -1).mean(1)


class Conv1DLikeRule(Rule):
    def representations(self, calls, batch_size):
        from tlkernels.persample.rules.linear import Conv1DRule

        yield from Conv1DRule().representations(calls, batch_size)


persample.register_rule(Conv1DLike, Conv1DLikeRule())


class BareParameters(nn.Module):
    """A class token and position embedding owned by the root (ViT-style)."""

    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, E) * 0.2)
        self.pos_embed = nn.Parameter(torch.randn(1, T + 1, E) * 0.2)
        self.embed = nn.Linear(5, E)
        self.head = nn.Linear(E, 3)

    def forward(self, x):
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), self.embed(x)], 1) + self.pos_embed
        return self.head(torch.tanh(h).mean(1))


def _cases():
    y = labels()
    cases = {}
    for bf in (True, False):
        x = randn(B, T, E)
        xin = x if bf else x.transpose(0, 1)
        for name, options in {
            "packed": dict(),
            "no_bias": dict(bias=False),
            "bias_kv_zero_attn": dict(add_bias_kv=True, add_zero_attn=True),
            "kpm": dict(masks=("key_padding_mask",)),
            "float_mask_weights": dict(masks=("float_mask",), use_weights=True),
            "bool_mask_3d": dict(masks=("bool_mask_3d", "key_padding_mask")),
            "causal": dict(masks=("causal",)),
            "cross_kdim_vdim": dict(
                cross=True,
                kdim=5,
                vdim=6,
                masks=("key_padding_mask",),
                use_weights=True,
            ),
            "cross_packed": dict(cross=True, add_bias_kv=True),
        }.items():
            cases[f"mha_{name}_bf{int(bf)}"] = (
                lambda bf=bf, o=options: Attention(bf, **o),
                ce,
                (xin, y),
            )
        for kind in ("encoder", "transformer"):
            cases[f"{kind}_bf{int(bf)}"] = (
                lambda k=kind, bf=bf: Stack(k, bf),
                ce,
                (xin, y),
            )
        xr = randn(B, T, 5) if bf else randn(T, B, 5)
        for cls in (nn.RNN, nn.LSTM, nn.GRU):
            for read in ("out", "h_n", "c_n") if cls is nn.LSTM else ("out", "h_n"):
                cases[f"{cls.__name__}_{read}_bf{int(bf)}"] = (
                    lambda c=cls, r=read, bf=bf: Recurrent(c, r, bf, num_layers=2, bidirectional=True),
                    ce,
                    (xr, y),
                )
    cases["LSTM_proj"] = (
        lambda: Recurrent(nn.LSTM, "h_n", False, num_layers=2, proj_size=3),
        ce,
        (randn(T, B, 5), y),
    )
    ids = torch.randint(1, 30, (B, 6), generator=torch.Generator().manual_seed(1))
    ids[1, -2:] = 0  # padding
    cases["bert_shaped"] = (BertShaped, ce, (ids, y))
    cases["gpt2_shaped"] = (Gpt2Shaped, lm_loss, ids.clamp(min=1))
    return cases


CASES = _cases()


def _build(name):
    make, loss, batch = CASES[name]
    torch.manual_seed(0)
    return make().to(DT), loss, batch


def _assert_close_scaled(got, want, rtol=1e-9):
    """Close relative to the largest entry (a parameter whose true gradient is 0 up to rounding,
    such as an attention key bias, has no meaningful relative error of its own)."""
    scale = max(1e-300, float(want.abs().max()))
    torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=rtol)


@pytest.mark.parametrize("name", sorted(CASES))
def test_products_match_a_per_sample_loop(name):
    model, loss, batch = _build(name)
    ref = reference.model_per_sample_grads_loop(model, loss, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerSampleFallbackWarning)  # every case here is native
        cap = persample.capture(model, loss, batch, verify=True)
        gen = torch.Generator().manual_seed(7)
        vs = [{n: torch.randn(g.shape[1:], dtype=DT, generator=gen) for n, g in ref.items()} for _ in range(2)]
        streamed = persample.grad_dot(model, loss, batch, vs)
    flat = torch.cat([g.flatten(1) for g in ref.values()], 1)
    want = torch.stack([sum(ref[n].flatten(1) @ v[n].flatten() for n in ref) for v in vs], 1)
    got = cap.per_sample_grads()
    _assert_close_scaled(torch.cat([got[n].flatten(1) for n in ref], 1), flat)
    _assert_close_scaled(cap.dot(vs), want)
    _assert_close_scaled(streamed, want)
    _assert_close_scaled(cap.norms(), flat.pow(2).sum(1))
    _assert_close_scaled(cap.gram(), flat @ flat.T)


@pytest.mark.parametrize("name", ["mha_bias_kv_zero_attn_bf0", "LSTM_c_n_bf0", "gpt2_shaped"])
def test_accumulate_grad_equals_a_weighted_backward(name):
    model, loss, batch = _build(name)
    w = randn(B, seed=9)
    cap = persample.capture(model, loss, batch)
    model.zero_grad()
    (loss(model, batch) * w).sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    cap.accumulate_grad(w)
    for n, p in model.named_parameters():
        _assert_close_scaled(p.grad, want[n])


class BareScaleAndMatmul(nn.Module):
    """A learned scale broadcast over the batch (splittable) and a bare matrix used in a matmul
    (not splittable by the op: the module goes to the fallback)."""

    def __init__(self, matmul: bool):
        super().__init__()
        self.matmul = matmul
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, E))
        self.proj = nn.Parameter(torch.randn(E if matmul else T, E) * 0.3)  # (T, E): a position offset
        self.embed = nn.Linear(5, E)
        self.head = nn.Linear(E, 3)

    def forward(self, x):
        h = self.gamma * self.embed(x)
        h = torch.einsum("bti,io->bto", h, self.proj) if self.matmul else h + self.proj
        return self.head(torch.tanh(h).mean(1))


def test_bare_parameters_of_the_root_are_exact_and_native():
    torch.manual_seed(0)
    model = BareParameters().to(DT)
    batch = (randn(B, T, 5), labels())
    ref = reference.model_per_sample_grads_loop(model, ce, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerSampleFallbackWarning)  # no whole-model vmap
        cap = persample.capture(model, ce, batch, verify=True)
        streamed = persample.grad_dot(model, ce, batch, {n: g[0] for n, g in ref.items()})
    for n, g in cap.per_sample_grads().items():
        _assert_close_scaled(g, ref[n])
    flat = torch.cat([g.flatten(1) for g in ref.values()], 1)
    _assert_close_scaled(cap.norms(), flat.pow(2).sum(1))
    _assert_close_scaled(streamed, flat @ torch.cat([g[0].flatten() for g in ref.values()]))


def test_bare_parameters_broadcast_natively_others_go_to_the_fallback_announced():
    torch.manual_seed(0)
    batch = (randn(B, T, 5), labels())
    native = BareScaleAndMatmul(matmul=False).to(DT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerSampleFallbackWarning)
        cap = persample.capture(native, ce, batch, verify=True)
    ref = reference.model_per_sample_grads_loop(native, ce, batch)
    for n, g in cap.per_sample_grads().items():
        _assert_close_scaled(g, ref[n])

    model = BareScaleAndMatmul(matmul=True).to(DT)
    with pytest.raises(persample.UnsupportedModuleError, match=r"proj.*einsum.*fallback=True"):
        persample.capture(model, ce, batch, fallback=False)
    ref = reference.model_per_sample_grads_loop(model, ce, batch)
    with pytest.warns(
        PerSampleFallbackWarning,
        match=r"<root> \(BareScaleAndMatmul\).*proj.*whole model",
    ):
        cap = persample.capture(model, ce, batch, verify=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerSampleFallbackWarning)  # once per model
        again = persample.capture(model, ce, batch)
    for n, g in cap.per_sample_grads().items():
        _assert_close_scaled(g, ref[n])
        _assert_close_scaled(again.per_sample_grads()[n], ref[n])


# ---------------------------------------------------------------------------------------------
# the invariant check: wrong results are refused by name
# ---------------------------------------------------------------------------------------------
class Scale(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, x):
        return x * self.weight


class WrongScaleRule(Rule):
    """Attributes each sample's gradient to the next sample: sums are right, samples are not."""

    def representations(self, calls, batch_size):
        (call,) = calls
        g = (call.args[0] * call.grads[0]).reshape(batch_size, -1, call.module.weight.shape[0]).sum(1)
        yield call.module.weight, DenseRep(g.roll(1, 0))


class ScaleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.scale, self.head = nn.Linear(5, E), Scale(E), nn.Linear(E, 3)

    def forward(self, x):
        return self.head(self.scale(torch.tanh(self.lin(x))))


def test_a_wrong_rule_is_caught_by_the_check_naming_the_parameter(monkeypatch):
    from tlkernels.persample import registry

    monkeypatch.setitem(registry._BY_TYPE, Scale, WrongScaleRule())
    torch.manual_seed(0)
    model = ScaleNet().to(DT)
    batch = (randn(B, 5), labels())
    with pytest.raises(PerSampleCheckError, match=r"scale\.weight \(relative error") as info:
        persample.capture(model, ce, batch)
    assert "lin.weight" not in str(info.value) and "head.weight" not in str(info.value)
    with pytest.raises(PerSampleCheckError, match=r"scale\.weight"):
        persample.grad_dot(model, ce, batch, {"scale.weight": torch.ones(E, dtype=DT)})
    report = None
    monkeypatch.delitem(registry._BY_TYPE, Scale)  # no rule registered: its own broadcast parameter, native
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerSampleFallbackWarning)
        report = persample.verify(model, ce, batch)
    assert set(report) == {n for n, _ in model.named_parameters()} and max(report.values()) < 1e-12


class TiedOutsideForward(nn.Module):
    """Uses the embedding table directly as an output projection (not through a module)."""

    def __init__(self):
        super().__init__()
        self.emb, self.mix = nn.Embedding(30, E), nn.Linear(E, E)

    def forward(self, ids):
        return torch.tanh(self.mix(self.emb(ids))).mean(1) @ self.emb.weight[:3].T


def test_a_parameter_used_outside_its_module_is_refused_by_name():
    torch.manual_seed(0)
    model = TiedOutsideForward().to(DT)
    ids = torch.randint(0, 30, (B, 6), generator=torch.Generator().manual_seed(0))
    with pytest.raises(PerSampleCheckError, match=r"emb\.weight .*recorded uses do not add up"):
        persample.capture(model, ce, (ids, labels()))


class SeqFirstMixer(nn.Module):
    """A user module taking (T, B, E) inputs with no batch_first flag."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(E, E), nn.Linear(E, 3)

    def forward(self, x):  # x: (T, B, E)
        return self.b(torch.tanh(self.a(x)).mean(0))


def test_an_unknown_batch_axis_is_caught_and_batch_axes_fixes_it():
    torch.manual_seed(0)
    model = SeqFirstMixer().to(DT)
    batch = (randn(T, B, E), labels())
    with pytest.raises(PerSampleCheckError, match=r"a\.weight.*batch_axes"):
        persample.capture(model, ce, batch)
    cap = persample.capture(model, ce, batch, batch_axes={"a": 1})
    ref = reference.model_per_sample_grads_loop(model, ce, batch)
    for n, g in cap.per_sample_grads().items():
        _assert_close_scaled(g, ref[n])


def test_training_mode_batchnorm_without_parameters_is_caught():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, E), nn.BatchNorm1d(E, affine=False), nn.Tanh(), nn.Linear(E, 3)).to(DT)
    with pytest.raises(PerSampleCheckError, match=r"0\.weight"):
        persample.capture(model, ce, (randn(B, 5), labels()))


def test_the_check_runs_once_per_structure_and_can_be_turned_off(monkeypatch):
    from tlkernels.persample import invariant as verify_module

    calls = []
    real = verify_module.check_capture
    monkeypatch.setattr(verify_module, "check_capture", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    model = ScaleNet().to(DT)
    batch = (randn(B, 5), labels())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerSampleFallbackWarning)
        persample.capture(model, ce, batch)
        persample.capture(model, ce, (randn(B + 3, 5), labels(B + 3)))  # same structure
        assert len(calls) == 1
        persample.capture(model, ce, batch, verify=True)
        assert len(calls) == 2
        model2 = ScaleNet().to(DT)
        monkeypatch.setenv("TLK_PERSAMPLE_VERIFY", "0")
        persample.capture(model2, ce, batch)
        assert len(calls) == 2
        with pytest.raises(ValueError, match="verify must be"):
            persample.capture(model2, ce, batch, verify="sometimes")


def test_a_packed_sequence_is_refused():
    model = nn.LSTM(5, 6).to(DT)
    packed = nn.utils.rnn.pack_padded_sequence(randn(T, B, 5), [4, 3, 2, 1])

    def loss(m, batch):
        return m(batch)[1][0][-1].sum(1)

    with pytest.raises(persample.UnsupportedModuleError, match="PackedSequence"):
        persample.capture(model, loss, packed)


def test_a_position_index_shared_by_the_batch_needs_the_batch_size_when_it_cannot_be_inferred():
    torch.manual_seed(0)
    model = BertShaped().to(DT)
    ids = torch.randint(1, 30, (B + 1, 6), generator=torch.Generator().manual_seed(1))

    def loss(m, batch):  # the batch leads with something else than B
        extra, ids, y = batch
        return ce(m, (ids, y))

    batch = (torch.zeros(7), ids, labels(B + 1))
    with pytest.raises(ValueError, match="batch_size=B"):
        persample.capture(model, loss, batch)
    cap = persample.capture(model, loss, batch, batch_size=B + 1)
    ref = reference.model_per_sample_grads_loop(model, loss, batch)
    for n, g in cap.per_sample_grads().items():
        _assert_close_scaled(g, ref[n])


# ---------------------------------------------------------------------------------------------
# the model zoos, built from small configurations (no weights)
# ---------------------------------------------------------------------------------------------
def _zoo():
    y = labels()
    ids = torch.randint(1, 50, (B, 6), generator=torch.Generator().manual_seed(2))
    images = randn(B, 3, 32, 32)

    def hf_cls(model, batch):
        ids, y = batch
        return F.cross_entropy(model(input_ids=ids).logits, y, reduction="none")

    def hf_lm(model, ids):
        logits = model(input_ids=ids).logits[:, :-1]
        return (
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                ids[:, 1:].reshape(-1),
                reduction="none",
            )
            .view(ids.shape[0], -1)
            .mean(1)
        )

    def bert():
        import transformers

        cfg = transformers.BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            num_labels=3,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        return transformers.BertForSequenceClassification(cfg)

    def gpt2(head):
        import transformers

        cfg = transformers.GPT2Config(
            vocab_size=50,
            n_embd=16,
            n_layer=2,
            n_head=2,
            n_positions=32,
            resid_pdrop=0,
            embd_pdrop=0,
            attn_pdrop=0,
            num_labels=3,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        )
        return getattr(transformers, head)(cfg)

    def tv_vit():
        import torchvision

        return torchvision.models.VisionTransformer(
            image_size=32,
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
            num_classes=3,
        )

    def tv_resnet():
        import torchvision

        return torchvision.models.resnet18(num_classes=3, norm_layer=lambda c: nn.GroupNorm(2, c))

    def timm_vit():
        import timm

        return timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            img_size=32,
            patch_size=8,
            embed_dim=16,
            depth=2,
            num_heads=2,
            num_classes=3,
        )

    def timm_convnext():
        import timm

        return timm.create_model(
            "convnext_atto",
            pretrained=False,
            num_classes=3,
            dims=(8, 16, 16, 16),
            depths=(1, 1, 1, 1),
            ls_init_value=0.5,
        )

    def timm_small(name, **kw):
        import timm

        return lambda: timm.create_model(name, pretrained=False, num_classes=3, **kw)

    def timm_mixer():
        from timm.models.mlp_mixer import MlpMixer

        return MlpMixer(num_classes=3, img_size=32, patch_size=8, embed_dim=16, num_blocks=2)

    def hf_vit():
        import transformers

        cfg = transformers.ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        return transformers.ViTForImageClassification(cfg)

    def hf_image_cls(model, batch):
        x, yy = batch
        return nn.functional.cross_entropy(model(pixel_values=x).logits, yy, reduction="none")

    return {
        "transformers_bert": ("transformers", bert, hf_cls, (ids, y), True),
        "transformers_gpt2_cls": (
            "transformers",
            lambda: gpt2("GPT2ForSequenceClassification"),
            hf_cls,
            (ids, y),
            True,
        ),
        "transformers_gpt2_lm": (
            "transformers",
            lambda: gpt2("GPT2LMHeadModel"),
            hf_lm,
            ids,
            True,
        ),
        "torchvision_resnet18_groupnorm": (
            "torchvision",
            tv_resnet,
            ce,
            (images, y),
            True,
        ),
        "torchvision_vit": (
            "torchvision",
            tv_vit,
            ce,
            (images, y),
            True,
        ),  # class token on the root
        "timm_vit": (
            "timm",
            timm_vit,
            ce,
            (images, y),
            True,
        ),  # cls_token / pos_embed on the root
        "timm_convnext_layerscale": (
            "timm",
            timm_convnext,
            ce,
            (images, y),
            True,
        ),  # gamma.reshape(1, -1, 1, 1)
        "transformers_vit": (
            "transformers",
            hf_vit,
            hf_image_cls,
            (images, y),
            True,
        ),  # tokens on ViTEmbeddings
        # a distillation token beside the class token
        "timm_deit_distilled": (
            "timm",
            timm_small(
                "deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2
            ),
            ce,
            (images, y),
            True,
        ),
        # token-mixing MLPs: Linear layers applied along the patch axis
        "timm_mlp_mixer": ("timm", timm_mixer, ce, (images, y), True),
        # GlobalResponseNorm: addcmul of its own parameters
        "timm_convnextv2_grn": (
            "timm",
            timm_small("convnextv2_atto", dims=(8, 16, 16, 16), depths=(1, 1, 1, 1)),
            ce,
            (images, y),
            True,
        ),
    }


ZOO = _zoo()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_model_zoo_against_a_per_sample_loop(name):
    package, make, loss, batch, native = ZOO[name]
    pytest.importorskip(package, reason=f"{package} is not installed (it is in the test extra)")
    torch.manual_seed(0)
    model = make().to(DT).eval()  # eval: no dropout, so the loop and the capture see one function
    ref = reference.model_per_sample_grads_loop(model, loss, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error" if native else "ignore", PerSampleFallbackWarning)  # (after: checked first)
        cap = persample.capture(model, loss, batch, verify=True)
        v = {n: torch.randn(g.shape[1:], dtype=DT, generator=torch.Generator().manual_seed(3)) for n, g in ref.items()}
        s = persample.grad_dot(model, loss, batch, v)
    flat = torch.cat([g.flatten(1) for g in ref.values()], 1)
    got = cap.per_sample_grads()
    _assert_close_scaled(torch.cat([got[n].flatten(1) for n in ref], 1), flat)
    _assert_close_scaled(s, sum(ref[n].flatten(1) @ v[n].flatten() for n in ref))
    _assert_close_scaled(cap.norms(), flat.pow(2).sum(1))


class DepthwiseNet(nn.Module):
    """A ConvNeXt-style stem: ungrouped, depthwise (groups = channels) and 1-d convolutions."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(6, 6, 5, padding="same", groups=6, padding_mode="circular")
        self.seq = nn.Conv1d(6, 4, 3, dilation=2)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.dw(torch.tanh(self.stem(x))))
        return self.head(torch.tanh(self.seq(h.flatten(2))).mean(2))


@pytest.mark.parametrize("chunk", [1 << 24, 64])  # 64 elements: one sample per chunk
def test_conv_norms_and_grams_through_unfolded_patches(chunk, monkeypatch):
    from tlkernels.persample import reps

    monkeypatch.setattr(reps, "_CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    model = DepthwiseNet().to(DT)
    batch = (randn(B, 3, 9, 8), labels())
    ref = reference.model_per_sample_grads_loop(model, ce, batch)
    cap = persample.capture(model, ce, batch, verify=True)
    flat = torch.cat([g.flatten(1) for g in ref.values()], 1)
    got = cap.per_sample_grads()
    _assert_close_scaled(torch.cat([got[n].flatten(1) for n in ref], 1), flat)
    _assert_close_scaled(cap.norms(), flat.pow(2).sum(1))
    _assert_close_scaled(cap.gram(), flat @ flat.T)


class OwnLinearMaps(nn.Module):
    """Bare matrices used as linear maps: x @ A (A is (I, O)), x @ W.T, F.linear(x, V, c), x @ U.mT."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.randn(5, E) * 0.3)
        self.W = nn.Parameter(torch.randn(6, E) * 0.3)
        self.V = nn.Parameter(torch.randn(4, 6) * 0.3)
        self.c = nn.Parameter(torch.randn(4) * 0.3)
        self.U = nn.Parameter(torch.randn(4, 4) * 0.3)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(x @ self.A)
        h = torch.tanh(h @ self.W.T)
        h = torch.tanh(nn.functional.linear(h, self.V, self.c))
        h = torch.tanh(torch.matmul(h, self.U.mT))
        return self.head(h.mean(1))


def test_bare_matrices_used_as_linear_maps_are_native_and_exact():
    torch.manual_seed(0)
    model = OwnLinearMaps().to(DT)
    batch = (randn(B, T, 5), labels())
    ref = reference.model_per_sample_grads_loop(model, ce, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerSampleFallbackWarning)
        cap = persample.capture(model, ce, batch, verify=True)
    flat = torch.cat([g.flatten(1) for g in ref.values()], 1)
    got = cap.per_sample_grads()
    _assert_close_scaled(torch.cat([got[n].flatten(1) for n in ref], 1), flat)
    _assert_close_scaled(cap.norms(), flat.pow(2).sum(1))
    _assert_close_scaled(cap.gram(), flat @ flat.T)
