"""Shared plumbing of the transfer estimators: input checks, layer lookup, one training loop."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._base import TorchClassifierMixin
from .._seeding import torch_generator
from .._validation import as_tensor, as_weights, as_xy

__all__ = [
    "ClassifierMixin",
    "as_weights",
    "as_x",
    "as_xy",
    "get_layer",
    "param_layers",
    "predict_logits",
    "split_head",
    "torch_generator",
    "train_loop",
]


def as_x(X, name: str = "X") -> Tensor:
    """numpy array or tensor -> checked tensor (N, ...) (``tlkernels._validation.as_tensor``)."""
    return as_tensor(X, name)


def param_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers: (name, module) for every module holding parameters of its own
    (Linear, Conv, norm layers ...), in registration order (input to output for nn.Sequential)."""
    return [(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]


def get_layer(model: nn.Module, name: str, arg: str = "layer") -> nn.Module:
    """The named submodule; a ValueError naming `arg` and listing the valid names otherwise."""
    modules = dict(model.named_modules())
    if not isinstance(name, str) or name not in modules or name == "":
        valid = [n for n in modules if n]
        raise ValueError(f"{arg}={name!r} is not a layer of the model; valid names: {valid}")
    return modules[name]


def split_head(model: nn.Module, arg: str = "model") -> tuple[nn.Sequential, nn.Module]:
    """nn.Sequential (..., head) -> (body, head): the network surgery of Lampert 2019."""
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        raise ValueError(
            f"{arg} must be an nn.Sequential whose last module is the classifier head "
            f"(to replace or keep the head), got {type(model).__name__}"
        )
    return nn.Sequential(*list(model)[:-1]), list(model)[-1]


def _reinit_like(head: nn.Module, n_classes: int, gen: torch.Generator) -> nn.Module:
    if not isinstance(head, nn.Linear):
        raise ValueError(f"n_classes needs the model's last module to be nn.Linear, got {type(head).__name__}")
    new = nn.Linear(head.in_features, n_classes, bias=head.bias is not None)
    bound = 1.0 / math.sqrt(head.in_features)
    with torch.no_grad():
        new.weight.copy_(torch.empty_like(new.weight).uniform_(-bound, bound, generator=gen))
        if new.bias is not None:
            new.bias.copy_(torch.empty_like(new.bias).uniform_(-bound, bound, generator=gen))
    return new.to(head.weight.device, head.weight.dtype)


def reset_parameters(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Re-initialises every Linear / Conv layer in place (PyTorch's default scheme, seeded)."""
    for _, m in param_layers(model):
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                m.weight.uniform_(-bound, bound, generator=gen)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=gen)
        elif hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model


def train_loop(
    model: nn.Module,
    param_groups,
    X: Tensor,
    y: Tensor | None,
    *,
    epochs: int,
    batch_size: int,
    optimizer: str,
    gen: torch.Generator,
    device,
    sample_weight: Tensor | None = None,
    loss_fn: Callable | None = None,
    extra_loss: Callable | None = None,
    on_epoch: Callable | None = None,
    value_on: tuple[Tensor, Tensor] | None = None,
    values: Tensor | None = None,
    verbose: bool = False,
    desc: str = "train",
) -> list[dict]:
    """Mini-batch training. loss_fn(model, xb, yb) -> per-example losses (B,) (default: cross-entropy
    of model(xb)); the batch loss is their sample_weight-weighted mean, plus
    extra_loss(model, xb) (a scalar: L2-SP, output constraint ...). on_epoch(epoch) is called
    after each epoch (validation curves). Returns the per-epoch history.

    value_on: a validation set (X_val (M, ...), y_val (M,)): every step's backward then runs through
    ``tlkernels.valuation.InRun`` (no second backward), which adds each example's first-order
    in-run data Shapley value on value_on's mean loss to ``values`` (N,) float64 at its row of X
    (sample_weight must be None: the values are shares of the mean loss)."""
    from tqdm.auto import tqdm

    if optimizer == "adam":
        opt = torch.optim.Adam(param_groups)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(param_groups, momentum=0.9)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if loss_fn is None:

        def loss_fn(m, xb, yb):
            return F.cross_entropy(m(xb), yb, reduction="none")

    n = X.shape[0]
    valuer = None
    if value_on is not None:
        from ..valuation import InRun

        if sample_weight is not None or values is None or values.shape != (n,):
            raise ValueError("value_on needs sample_weight=None and values, a (N,) accumulator")
        Xv, yv = value_on
        valuer = InRun(model, lambda m, b: loss_fn(m, b[0], b[1]), (Xv.to(device), yv.to(device)), optimizer=opt)
    history = []
    for epoch in tqdm(range(epochs), desc=desc, disable=not verbose, leave=False):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb = X[idx].to(device)
            yb = None if y is None else y[idx].to(device)
            if valuer is not None:  # the step's backward with each example's value on value_on
                opt.zero_grad(set_to_none=True)
                loss = valuer.step((xb, yb), idx)
                if extra_loss is not None:
                    extra = extra_loss(model, xb)
                    extra.backward()
                    loss = loss + extra.detach()
                values.index_add_(0, idx, valuer.last_values.to(values.device))
                opt.step()
                total += float(loss) * len(idx)
                seen += len(idx)
                continue
            per = loss_fn(model, xb, yb)
            if sample_weight is not None:
                wb = sample_weight[idx].to(device)
                loss = (wb * per).sum() / wb.sum().clamp_min(1e-12)
            else:
                loss = per.mean()
            if extra_loss is not None:
                loss = loss + extra_loss(model, xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        row = {"epoch": epoch + 1, "loss": total / max(seen, 1)}
        if on_epoch is not None:
            row.update(on_epoch(epoch + 1) or {})
        history.append(row)
    model.eval()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, X: Tensor, device, batch_size: int = 512) -> Tensor:
    was = model.training
    model.eval()
    out = [model(X[i : i + batch_size].to(device)).cpu() for i in range(0, X.shape[0], batch_size)]
    model.train(was)
    return torch.cat(out)


# the classifier surface of the transfer estimators (predict / predict_proba / score from the
# scores of ``_decision``), kept under its former name for the modules importing it from here
ClassifierMixin = TorchClassifierMixin


def clone_module(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
