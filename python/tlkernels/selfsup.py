"""Self-supervised rotation prediction (Gidaris et al.): the pretext task of the dataserver's
experts (Yan et al. 2020, eq. 4) and of self-supervised pretraining. One implementation, used by both.

Every image is shown at 0, 90, 180 and 270 degrees; the network predicts which. This module
holds the task (rotated copies, loss, accuracy) and its one trainer, ``train_rotation``;
``tlkernels.transfer.RotationPretrainer`` is the scikit-learn estimator around it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["N_ROTATIONS", "rotate4", "rotate_batch", "rotation_loss", "rotation_accuracy", "train_rotation", "SmallCNN"]

N_ROTATIONS = 4


def rotate_batch(X: Tensor) -> tuple[Tensor, Tensor]:
    """X (B, C, H, W) with H == W -> (4B, C, H, W) rotated copies and their labels (4B,) in
    {0, 1, 2, 3} (quarter turns counter-clockwise)."""
    if X.dim() != 4 or X.shape[2] != X.shape[3]:
        raise ValueError(f"X must have shape (B, C, H, W) with square images, got {tuple(X.shape)}")
    rots = [torch.rot90(X, k, dims=(2, 3)) for k in range(4)]
    labels = torch.arange(4, device=X.device).repeat_interleave(X.shape[0])
    return torch.cat(rots), labels


def rotate4(X: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """All four rotations of each image (``rotate_batch``), or each image by its own rotation.

    X (N, C, H, W) with H == W; labels: optional (N,) rotation ids in {0, 1, 2, 3} (then each
    image is rotated by its own 90 * label degrees and N images come back). Returns
    (X_rot (4N, C, H, W), y_rot (4N,)) ordered rotation-major (all images at 0 degrees, then 90 ...),
    or (N, C, H, W), labels when labels are given. Rotation is counter-clockwise (torch.rot90).
    """
    if not isinstance(X, Tensor) or X.dim() != 4 or X.shape[-1] != X.shape[-2]:
        raise ValueError(
            f"X must be square images (N, C, H, W), got {tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__}"
        )
    if labels is None:
        return rotate_batch(X)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (X.shape[0],) or (labels < 0).any() or (labels >= N_ROTATIONS).any():
        raise ValueError(f"labels must be ({X.shape[0]},) ids in 0..3")
    out = torch.empty_like(X)
    for r in range(N_ROTATIONS):
        m = labels == r
        if m.any():
            out[m] = torch.rot90(X[m], r, dims=(-2, -1))
    return out, labels


def rotation_loss(model: nn.Module, X: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of `model` (4 outputs) predicting the rotation of every image of X."""
    Xr, yr = rotate_batch(X)
    return F.cross_entropy(model(Xr), yr, reduction=reduction)


@torch.no_grad()
def rotation_accuracy(model: nn.Module, X, device=None, batch_size: int = 512) -> float:
    """Share of the 4N rotated copies of X (N, C, H, W) whose rotation `model` (logits (., 4))
    recognises (Yan et al. 2020, eq. 5): a label-free score of how well a rotation expert knows X."""
    X = torch.as_tensor(X, dtype=torch.float32)
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    device = torch.device(device)
    model.eval()
    correct = total = 0
    for i in range(0, X.shape[0], batch_size):
        Xr, yr = rotate_batch(X[i : i + batch_size])
        logits = model(Xr.to(device))
        if logits.dim() != 2 or logits.shape[1] != 4:
            raise ValueError(f"model must output (N, 4) rotation logits, got {tuple(logits.shape)}")
        correct += (logits.argmax(1).cpu() == yr).sum().item()
        total += yr.numel()
    return correct / max(total, 1)


def train_rotation(
    model: nn.Module,
    X: Tensor,
    epochs: int = 10,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    verbose: bool = False,
    *,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    sample_weight: Tensor | None = None,
    sampling: str = "images",
    generator: torch.Generator | None = None,
    device=None,
) -> nn.Module:
    """Trains `model` (4 outputs) on rotation prediction over X (N, C, H, W); returns it.

    optimizer: 'sgd' (momentum 0.9, the default) or 'adam'; weight_decay of either.
    sampling: 'images' (each step takes batch_size images and all four rotations of each, 4 *
    batch_size copies) or 'copies' (the 4N rotated copies are shuffled as one set, batch_size
    copies a step). sample_weight (N,): a weight per image, applied to its four copies ('copies'
    only). generator: the batch order's generator (default: seeded with ``seed``). device: where
    the batches go ('copies'; default the model's device). ``rotation_history`` gives the
    per-epoch losses as well.
    """
    rotation_history(
        model,
        X,
        epochs,
        lr,
        batch_size,
        seed,
        verbose,
        optimizer=optimizer,
        weight_decay=weight_decay,
        sample_weight=sample_weight,
        sampling=sampling,
        generator=generator,
        device=device,
    )
    return model


def rotation_history(
    model: nn.Module,
    X: Tensor,
    epochs: int = 10,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    verbose: bool = False,
    *,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    sample_weight: Tensor | None = None,
    sampling: str = "images",
    generator: torch.Generator | None = None,
    device=None,
) -> list[dict]:
    """``train_rotation`` returning the per-epoch history [{epoch, loss}] ('copies'; [] for
    'images', whose loop keeps no history)."""
    if sampling not in ("images", "copies"):
        raise ValueError(f"sampling must be 'images' or 'copies', got {sampling!r}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    if sampling == "copies":
        from .transfer._common import train_loop

        Xr, yr = rotate4(X)
        wr = None if sample_weight is None else sample_weight.repeat(N_ROTATIONS)
        if device is None:
            device = next(iter(model.parameters()), torch.empty(0)).device
        return train_loop(
            model,
            [{"params": model.parameters(), "lr": lr, "weight_decay": weight_decay}],
            Xr,
            yr,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            gen=gen,
            device=device,
            sample_weight=wr,
            verbose=verbose,
            desc="rotation",
        )
    if sample_weight is not None:
        raise ValueError("sample_weight needs sampling='copies'")
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    steps = range(epochs)
    if verbose:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="rotation pretraining", unit="epoch")
    for _ in steps:
        perm = torch.randperm(X.shape[0], generator=gen)
        for i in range(0, X.shape[0], batch_size):
            opt.zero_grad(set_to_none=True)
            rotation_loss(model, X[perm[i : i + batch_size]]).backward()
            opt.step()
    return []


class SmallCNN(nn.Module):
    """conv(C->width, 3) - ReLU - conv(width->feature_dim, 3) - ReLU - average pool to a
    grid x grid map - flatten - linear head. pool > 1 max-pools by that factor after each ReLU
    (for images larger than 8x8: 32x32 inputs with pool=2 and grid=2 reach a 14-pixel receptive
    field and keep which quadrant holds what, which rotation prediction needs); the defaults
    (pool=1, grid=1: global average pooling) are the 8x8 networks'. Input (B, C, H, W) with H, W
    >= grid * pool**2; ``features(x)`` gives (B, feature_dim * grid**2), ``forward(x)`` the head's
    (B, n_outputs)."""

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 16,
        feature_dim: int = 32,
        n_outputs: int = 4,
        pool: int = 1,
        grid: int = 1,
    ):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("width", width), ("feature_dim", feature_dim),
                        ("n_outputs", n_outputs), ("pool", pool), ("grid", grid)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.config = {
            "arch": "small_cnn",
            "in_channels": in_channels,
            "width": width,
            "feature_dim": feature_dim,
            "n_outputs": n_outputs,
            "pool": pool,
            "grid": grid,
        }

        def down():
            return [nn.MaxPool2d(pool)] if pool > 1 else []

        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            *down(),
            nn.Conv2d(width, feature_dim, 3, padding=1),
            nn.ReLU(),
            *down(),
            nn.AdaptiveAvgPool2d(grid),
            nn.Flatten(),
        )
        self.head = nn.Linear(feature_dim * grid * grid, n_outputs)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))
