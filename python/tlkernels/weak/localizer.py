"""Weakly-supervised localisation (Lampert 2019, Part III, "Example: Object Detection"): a classifier
trained on image-level labels only, whose score decomposes over pixels, and a detector
f(X) = argmax_R g(R) over rectangular regions R (exhaustive search or ESS branch-and-bound).

A small fully-convolutional net gives every pixel a score s(p); the score of a window R is
g(R) = sum_{p in R} s(p) (an integral-image look-up), exactly what ``localize`` maximises.
Two ways to make the image-level logit that is trained on the weak labels:

- 'window' (default): bias + max_R g(R) over boxes with sizes in [min_size, max_size]
  (multiple-instance learning: the image is positive if its best window is). Training and
  detection optimise the same quantity, and negatives push their best window -- background,
  distractor strokes -- below the bias, so windows do not grow into empty regions.
- 'sum': sum_p s(p), the bag-of-local-features classifier of ESS's linear SVM. Its weakness:
  a constant per-pixel offset is only pinned down by the class balance, so background scores
  end up barely below zero and the receptive field blurs positive scores around the object;
  the arg-max box is then too large (measured in experiments/weak.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassifierMixin
from torch import Tensor, nn

from .._base import TorchEstimator, like_input
from .._seeding import seed_global_torch
from .._validation import to_numpy
from ..transfer._common import as_weights, as_x, torch_generator, train_loop
from .localization import iou, localize

__all__ = ["ScoreMapNet", "WeakLocalizer", "window_sums"]


class ScoreMapNet(nn.Module):
    """Fully-convolutional per-pixel score map.

    conv(1 -> channels, kernel_size) - ReLU - conv(channels -> channels, 3) - ReLU - conv 1x1 -> 1,
    'same' padding; the score layer starts at zero. forward(x (N, 1, H, W)) -> s (N, H, W);
    ``image_logits(x, pooling, min_size, max_size)`` -> (N,) image-level logits ('sum' or
    'window', see the module docstring), usable in any training loop with
    binary_cross_entropy_with_logits.
    """

    def __init__(self, channels: int = 16, kernel_size: int = 5):
        super().__init__()
        if not (isinstance(channels, int) and channels >= 1):
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if not (isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2 == 1):
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size, padding=kernel_size // 2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
        )
        self.score = nn.Conv2d(channels, 1, 1)
        self.bias = nn.Parameter(torch.zeros(()))  # image-level bias, used by 'window' pooling only
        # s = 0 at the start: window sums of up to H*W random pixel scores would otherwise saturate
        # the logistic loss and often stall training at chance
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.features(x))[:, 0]

    def image_logits(self, x: Tensor, pooling: str = "sum", min_size=1, max_size=None) -> Tensor:
        """x (N, 1, H, W) -> image logits (N,): 'sum': sum_p s(p) (no bias); 'window':
        bias + max over boxes R (sizes in [min_size, max_size]) of sum_{p in R} s(p)."""
        s = self(x)
        if pooling == "sum":
            return s.sum((1, 2))
        if pooling != "window":
            raise ValueError(f"pooling must be 'sum' or 'window', got {pooling!r}")
        return self.bias + window_sums(s, min_size, max_size).flatten(1).max(1).values


def _box_index(n: int, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    a, b = torch.triu_indices(n + 1, n + 1, 1)
    keep = (b - a >= lo) & (b - a <= hi)
    return a[keep], b[keep]


def window_sums(s: Tensor, min_size=1, max_size=None) -> Tensor:
    """Score maps s (N, H, W) -> (N, P, Q): the sum of s over every box whose height is in
    [min_size, max_size] (P (top, bottom) pairs) and width likewise (Q (left, right) pairs), in the
    order of torch.triu_indices; differentiable (integral image + gathers)."""
    N, H, W = s.shape
    (hmin, wmin), (hmax, wmax) = _pair(min_size, (1, 1)), _pair(max_size, (H, W))
    ii = F.pad(s.cumsum(1).cumsum(2), (1, 0, 1, 0))
    ts, bs = _box_index(H, hmin, min(hmax, H))
    ls, rs = _box_index(W, wmin, min(wmax, W))
    strips = ii[:, bs, :] - ii[:, ts, :]
    return strips[:, :, rs] - strips[:, :, ls]


def _pair(v, default):
    if v is None:
        return default
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _check_images(images, name="images") -> Tensor:
    X = as_x(images, name)
    if X.dim() != 4 or X.shape[1] != 1:
        raise ValueError(f"{name} must have shape (N, 1, H, W), got {tuple(X.shape)}")
    return X


class WeakLocalizer(ClassifierMixin, TorchEstimator):
    """Localiser trained from image-level labels only.

    Args:
        channels, kernel_size: of the ``ScoreMapNet``.
        pooling: how the image-level logit is made from the score map during training:
            'window' (default): bias + max over boxes with sizes in [min_size, max_size] of
            sum_{p in box} s(p) -- multiple-instance training of exactly the quantity the detector
            maximises; 'sum': sum_p s(p) over the whole image (a bag of local features; see the
            module docstring for its weakness).
        epochs, lr, weight_decay, batch_size, optimizer ('adam' | 'sgd'): training of the
            image-level logistic loss.
        method: 'branch_and_bound' (ESS) or 'exhaustive', the arg-max search of ``localize``.
        min_size, max_size: int or (height, width), limits on the predicted box.
        device, random_state, verbose (tqdm bar over epochs).

    fit(images (N, 1, H, W), image_labels (N,) in {0, 1}, sample_weight=None (N,)) -> self.
    Attributes: ``net_`` (the trained ScoreMapNet), ``history_`` (per-epoch loss), ``classes_``
    ([0, 1]), ``n_evaluated_`` (N,) boxes / box sets scored by the last ``localize`` call.
    Outputs are numpy for numpy images and tensors for tensor images. ``score`` is the
    localisation accuracy (boxes); ``classification_score`` the image-level accuracy.
    """

    def __init__(
        self,
        channels: int = 16,
        kernel_size: int = 5,
        pooling: str = "window",
        epochs: int = 20,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        optimizer: str = "adam",
        method: str = "branch_and_bound",
        min_size=4,
        max_size=None,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if method not in ("branch_and_bound", "exhaustive"):
            raise ValueError(f"method must be 'exhaustive' or 'branch_and_bound', got {method!r}")
        if pooling not in ("window", "sum"):
            raise ValueError(f"pooling must be 'window' or 'sum', got {pooling!r}")
        if not (isinstance(epochs, (int, np.integer)) and epochs >= 0):
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        ScoreMapNet(channels, kernel_size)  # validates channels / kernel_size now
        self.pooling = pooling
        self.channels, self.kernel_size, self.epochs, self.lr = channels, kernel_size, epochs, lr
        self.weight_decay, self.batch_size, self.optimizer = weight_decay, batch_size, optimizer
        self.method, self.min_size, self.max_size = method, min_size, max_size
        self.device = device
        self.random_state, self.verbose = random_state, verbose

    def fit(self, images, image_labels, sample_weight=None) -> WeakLocalizer:
        X = _check_images(images)
        y = torch.as_tensor(to_numpy(image_labels))
        if y.dim() != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"image_labels must have shape ({X.shape[0]},) to match images, got {tuple(y.shape)}")
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("image_labels must be 0 (object absent) or 1 (object present)")
        y = y.long()
        w = as_weights(sample_weight, X.shape[0])
        gen = torch_generator(self.random_state)
        seed_global_torch(gen)
        device = self._device()
        net = ScoreMapNet(self.channels, self.kernel_size).to(device)
        groups = [{"params": list(net.parameters()), "lr": self.lr, "weight_decay": self.weight_decay}]

        def loss_fn(m, xb, yb):
            logits = m.image_logits(xb, self.pooling, self.min_size, self.max_size)
            return F.binary_cross_entropy_with_logits(logits, yb.float(), reduction="none")

        self.history_ = train_loop(
            net,
            groups,
            X,
            y,
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            gen=gen,
            device=device,
            sample_weight=w,
            loss_fn=loss_fn,
            verbose=self.verbose,
            desc="weak localiser",
        )
        self.net_ = net.eval()
        self.classes_ = np.arange(2)
        return self

    def _check_fitted(self):
        self._check_is_fitted()

    @torch.no_grad()
    def _score_maps(self, images) -> np.ndarray:
        self._check_fitted()
        X = _check_images(images)
        dev = self._device()
        return torch.cat([self.net_(X[i : i + 256].to(dev)).cpu() for i in range(0, X.shape[0], 256)]).numpy()

    @torch.no_grad()
    def _logits(self, images) -> np.ndarray:
        self._check_fitted()
        X = _check_images(images)
        dev = self._device()
        return torch.cat(
            [
                self.net_.image_logits(X[i : i + 256].to(dev), self.pooling, self.min_size, self.max_size).cpu()
                for i in range(0, X.shape[0], 256)
            ]
        ).numpy()

    def score_maps(self, images):
        """images (N, 1, H, W) -> per-pixel scores s(p) (N, H, W)."""
        return like_input(self._score_maps(images), images)

    def decision_function(self, images):
        """images (N, 1, H, W) -> image-level logits (N,) (the training ``pooling``)."""
        return like_input(self._logits(images), images)

    def predict_proba(self, images):
        """images (N, 1, H, W) -> (N, 2) probabilities of [absent, present]."""
        p = 1.0 / (1.0 + np.exp(-np.clip(self._logits(images), -60, 60)))
        return like_input(np.stack([1 - p, p], 1), images)

    def predict(self, images):
        """images (N, 1, H, W) -> image-level labels (N,) in {0, 1}."""
        return like_input((self._logits(images) > 0).astype(np.int64), images)

    def classification_score(self, images, image_labels) -> float:
        """Image-level accuracy on (images (N, 1, H, W), image_labels (N,))."""
        return float((to_numpy(self.predict(images)) == to_numpy(image_labels)).mean())

    def localize(self, images, return_info: bool = False):
        """images (N, 1, H, W) -> boxes (N, 4) int64 (y0, x0, y1, x1), exclusive ends: the arg-max
        window of each score map; with return_info also the window scores (N,). Sets
        ``n_evaluated_`` (N,)."""
        maps = self._score_maps(images)
        out = [localize(s, self.method, self.min_size, self.max_size, return_info=True) for s in maps]
        boxes = np.stack([b for b, _ in out])
        self.n_evaluated_ = np.array([i["n_evaluated"] for _, i in out])
        res = (boxes, np.array([i["score"] for _, i in out])) if return_info else boxes
        return like_input(res, images)

    def score(self, images, boxes, threshold: float = 0.5) -> float:
        """Localisation accuracy: fraction of images whose predicted box has IoU >= threshold with
        the true box (boxes (N, 4)); rows with negative coordinates (no object) are skipped."""
        b = to_numpy(boxes)
        X = _check_images(images)
        if b.shape != (X.shape[0], 4):
            raise ValueError(f"boxes must have shape ({X.shape[0]}, 4) to match images, got {b.shape}")
        keep = (b >= 0).all(1)
        if not keep.any():
            raise ValueError("boxes holds no object (every row has negative coordinates)")
        pred = to_numpy(self.localize(X[torch.as_tensor(np.flatnonzero(keep))]))
        return float((iou(pred, b[keep]) >= threshold).mean())
