"""Self-supervised rotation prediction (Gidaris et al.): the pretext task of the dataserver's
experts (Yan et al. 2020, eq. 4) and of self-supervised pretraining. One implementation, used by both.

Every image is shown at 0, 90, 180 and 270 degrees; the network predicts which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["rotate_batch", "rotation_loss", "rotation_accuracy", "train_rotation", "SmallCNN"]


def rotate_batch(X: Tensor) -> tuple[Tensor, Tensor]:
    """X (B, C, H, W) with H == W -> (4B, C, H, W) rotated copies and their labels (4B,) in
    {0, 1, 2, 3} (quarter turns counter-clockwise)."""
    if X.dim() != 4 or X.shape[2] != X.shape[3]:
        raise ValueError(f"X must have shape (B, C, H, W) with square images, got {tuple(X.shape)}")
    rots = [torch.rot90(X, k, dims=(2, 3)) for k in range(4)]
    labels = torch.arange(4, device=X.device).repeat_interleave(X.shape[0])
    return torch.cat(rots), labels


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
        Xr, yr = rotate_batch(X[i:i + batch_size])
        logits = model(Xr.to(device))
        if logits.dim() != 2 or logits.shape[1] != 4:
            raise ValueError(f"model must output (N, 4) rotation logits, got {tuple(logits.shape)}")
        correct += (logits.argmax(1).cpu() == yr).sum().item()
        total += yr.numel()
    return correct / max(total, 1)


def train_rotation(model: nn.Module, X: Tensor, epochs: int = 10, lr: float = 0.05, batch_size: int = 64,
                   seed: int = 0, verbose: bool = False) -> nn.Module:
    """Trains `model` (4 outputs) on rotation prediction over X (N, C, H, W); SGD momentum 0.9."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    steps = range(epochs)
    if verbose:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="rotation pretraining", unit="epoch")
    for _ in steps:
        perm = torch.randperm(X.shape[0], generator=gen)
        for i in range(0, X.shape[0], batch_size):
            opt.zero_grad(set_to_none=True)
            rotation_loss(model, X[perm[i:i + batch_size]]).backward()
            opt.step()
    return model


class SmallCNN(nn.Module):
    """conv(C->width, 3) - ReLU - conv(width->feature_dim, 3) - ReLU - global average pool -
    linear head. ``features(x)`` gives (B, feature_dim), ``forward(x)`` the head's outputs."""

    def __init__(self, in_channels: int = 1, width: int = 16, feature_dim: int = 32, n_outputs: int = 4):
        super().__init__()
        self.config = {"arch": "small_cnn", "in_channels": in_channels, "width": width,
                       "feature_dim": feature_dim, "n_outputs": n_outputs}
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, feature_dim, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(feature_dim, n_outputs)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))
