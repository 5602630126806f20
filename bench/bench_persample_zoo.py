"""Per-sample products on the architectures people run: grad_dot, grad_norms and a SOSELETO-style
step against a plain training step, torch.func (vmap) and Opacus, side by side in one run.

Models (float32, CPU, built from small configurations, no weights):
  gpt2     transformers' GPT2LMHeadModel, 4 layers, d = 256, T = 128, B = 16 (next-token loss)
  bert     transformers' BertForSequenceClassification, 4 layers, d = 256, T = 128, B = 16
  vit      torchvision's VisionTransformer, patch 4, 32x32 images, 4 layers, d = 192, B = 64
  resnet18 torchvision's ResNet-18 with GroupNorm, 32x32 images, B = 64
  lstm     2-layer nn.LSTM, T = 64, d = 256, B = 32, classifier on h_n

Columns (median seconds of interleaved repeats, and ratios to the plain step):
  plain       forward + backward of the mean loss (ordinary training)
  grad_dot    persample.grad_dot (streamed Q^T g)
  grad_norms  persample.grad_norms (squared per-sample gradient norms)
  soseleto    capture + dot + accumulate_grad (what one SOSELETO step adds to the plain step)
  vmap        torch.func vmap(grad) per-sample gradients, then the dot
  opacus      Opacus GradSampleModule per-sample gradients, then the dot
A peer that cannot run a model is reported with its error. Every method's s is checked against
grad_dot before timing. The automatic invariant check runs once per model before timing (its
cost is a one-off, shown separately as `first_call`).

    python bench/bench_persample_zoo.py --json bench/results/persample_zoo.json
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_median_times, machine, write_results  # noqa: E402
from tlkernels import persample  # noqa: E402
from tlkernels.reference import model_per_sample_grads  # noqa: E402

MODELS = ["gpt2", "bert", "vit", "resnet18", "lstm"]


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(1000, 256)
        self.lstm = nn.LSTM(256, 256, num_layers=2, batch_first=True)
        self.head = nn.Linear(256, 10)

    def forward(self, idx):
        _, (h_n, _) = self.lstm(self.emb(idx))
        return self.head(h_n[-1])


def group_norm(channels: int) -> nn.GroupNorm:
    """ResNet-18's norm layer (a named function: Opacus deep-copies the model, and lambdas do not pickle)."""
    return nn.GroupNorm(min(32, channels), channels)


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def hf_cls(model, batch):
    ids, y = batch
    return F.cross_entropy(model(input_ids=ids).logits, y, reduction="none")


def hf_lm(model, ids):
    logits = model(input_ids=ids).logits[:, :-1]
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    return per_token.view(ids.shape[0], -1).mean(1)


def build(name: str):
    """(model, loss_fn, batch)."""
    torch.manual_seed(0)
    if name in ("gpt2", "bert"):
        import transformers

        if name == "gpt2":
            cfg = transformers.GPT2Config(
                vocab_size=5000,
                n_embd=256,
                n_layer=4,
                n_head=4,
                n_positions=128,
                resid_pdrop=0,
                embd_pdrop=0,
                attn_pdrop=0,
                bos_token_id=0,
                eos_token_id=0,
            )
            return transformers.GPT2LMHeadModel(cfg), hf_lm, torch.randint(0, 5000, (16, 128))
        cfg = transformers.BertConfig(
            vocab_size=5000,
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=1024,
            max_position_embeddings=128,
            num_labels=10,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        return (
            transformers.BertForSequenceClassification(cfg),
            hf_cls,
            (torch.randint(0, 5000, (16, 128)), torch.randint(0, 10, (16,))),
        )
    if name == "vit":
        import torchvision

        model = torchvision.models.VisionTransformer(
            image_size=32, patch_size=4, num_layers=4, num_heads=3, hidden_dim=192, mlp_dim=768, num_classes=10
        )
        return model, ce, (torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    if name == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(num_classes=10, norm_layer=group_norm)
        return model, ce, (torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    if name == "lstm":
        return LSTMClassifier(), ce, (torch.randint(0, 1000, (32, 64)), torch.randint(0, 10, (32,)))
    raise ValueError(name)


def methods(model, loss_fn, batch, vec):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    vflat = torch.cat([vec[n].flatten() for n in names])

    def plain():
        model.zero_grad(set_to_none=True)
        loss_fn(model, batch).mean().backward()

    def soseleto():
        cap = persample.capture(model, loss_fn, batch)
        s = cap.dot(vec)
        model.zero_grad(set_to_none=True)
        cap.accumulate_grad(torch.sigmoid(s))
        return s

    def vmap():
        g = model_per_sample_grads(model, loss_fn, batch)
        return torch.cat([g[n].flatten(1) for n in names], 1) @ vflat

    def opacus():
        from opacus import GradSampleModule

        gsm = _opacus_cache.get(id(model))
        if gsm is None:
            from opacus.validators import ModuleValidator

            # Opacus' own fixer first (in-place activations, nn.LSTM -> DPLSTM), as its users do
            fixed = ModuleValidator.fix(copy.deepcopy(model))
            gsm = GradSampleModule(fixed, loss_reduction="sum")
            _opacus_cache[id(model)] = gsm
        params = dict(gsm._module.named_parameters())
        gsm.zero_grad(set_to_none=True)
        for p in params.values():
            p.grad_sample = None
        loss_fn(gsm._module, batch).sum().backward()
        return torch.cat([params[n].grad_sample.flatten(1) for n in names], 1) @ vflat

    return {
        "plain": plain,
        "grad_dot": lambda: persample.grad_dot(model, loss_fn, batch, vec),
        "grad_norms": lambda: persample.grad_norms(model, loss_fn, batch),
        "soseleto": soseleto,
        "vmap": vmap,
        "opacus": opacus,
    }


_opacus_cache: dict = {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="bench/results/persample_zoo.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    info = machine()
    print("CPU:", info.get("cpu"), "| torch", torch.__version__, "| threads", torch.get_num_threads(), flush=True)
    rows = []
    for name in args.models.split(","):
        model, loss_fn, batch = build(name)
        gen = torch.Generator().manual_seed(1)
        vec = {n: torch.randn(p.shape, generator=gen) for n, p in model.named_parameters()}
        fns = methods(model, loss_fn, batch, vec)
        t0 = time.perf_counter()
        want = fns["grad_dot"]()  # the first call also runs the invariant check
        first_call = time.perf_counter() - t0
        errors = {}
        for m in ("soseleto", "vmap", "opacus"):
            try:
                got = fns[m]()
                torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2 * float(want.abs().max()))
            except Exception as e:  # a peer that cannot run this model: reported, not timed
                errors[m] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        runnable = {m: f for m, f in fns.items() if m not in errors}
        times = interleaved_median_times(runnable, repeats=args.repeats)
        row = {
            "model": name,
            "first_call_seconds": first_call,
            "seconds": times,
            "errors": errors,
            "vs_plain": {m: t / times["plain"] for m, t in times.items()},
        }
        rows.append(row)
        print(
            f"{name:9s} plain {times['plain'] * 1e3:7.1f} ms | "
            + " | ".join(f"{m} {row['vs_plain'][m]:.2f}x" for m in times if m != "plain")
            + (f" | first grad_dot call {first_call / times['plain']:.1f}x" if first_call else "")
            + "".join(f"\n          {m}: {e}" for m, e in errors.items()),
            flush=True,
        )
    write_results(
        args.json,
        {
            "benchmark": "per-sample products on model-zoo architectures",
            "device": "cpu",
            "dtype": "float32",
            "machine": info,
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
