"""Domain mapping with cycle consistency (CycleGAN, Zhu, Park, Isola & Efros, ICCV 2017; Lampert 2019).

Two unpaired image sets, source S and target T. Two generators F: S -> T and G: T -> S and two
discriminators D_T (is it a target image?) and D_S are trained with least-squares GAN losses
(LSGAN, as CycleGAN uses) plus the cycle-consistency loss

    L_cyc = E_s |G(F(s)) - s|_1 + E_t |F(G(t)) - t|_1        (per-pixel mean)

and optionally the identity loss E_t |F(t) - t| + E_s |G(s) - s|. The generators minimise

    L_G = E_s (D_T(F(s)) - 1)^2 + E_t (D_S(G(t)) - 1)^2 + cycle_weight L_cyc + identity_weight L_id,

the discriminators 1/2 [(D(real) - 1)^2 + D(fake)^2]. Lampert 2019's recipe then trains a
classifier on the mapped source (F(s_i), y_i) and applies it to target images
(``MappedSourceClassifier``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch
from sklearn.base import ClassifierMixin as _SkClassifier
from torch import Tensor, nn

from .._base import TorchEstimator, TorchTransformerMixin, like_input
from .._seeding import draw_seed
from .._validation import as_labels
from ..nn import mlp
from ..transfer._common import (
    ClassifierMixin,
    as_weights,
    as_x,
    predict_logits,
    torch_generator,
    train_loop,
)

__all__ = [
    "CycleConsistencyLoss",
    "CycleGAN",
    "LSGANLoss",
    "MappedSourceClassifier",
    "conv_generator",
    "mlp_discriminator",
]


def _reduce(per: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    if reduction == "none":
        return per
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class CycleConsistencyLoss(nn.Module):
    """|G(F(x)) - x|_1 (+ |F(G(y)) - y|_1), each the mean absolute error over the pixels of an
    example, then reduced over examples.

    forward(x (N, ...), x_cycled (N, ...), y (M, ...) = None, y_cycled (M, ...) = None) ->
    scalar, or with reduction='none' the per-example values: (N,) for the x cycle alone, a tuple
    ((N,), (M,)) with both.
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        _reduce(torch.zeros(1), reduction)
        self.reduction = reduction

    @staticmethod
    def _per(a: Tensor, b: Tensor, name: str) -> Tensor:
        if a.shape != b.shape:
            raise ValueError(f"{name} must have the shape of its input {tuple(a.shape)}, got {tuple(b.shape)}")
        return (a - b).abs().reshape(a.shape[0], -1).mean(1)

    def forward(self, x: Tensor, x_cycled: Tensor, y: Tensor | None = None, y_cycled: Tensor | None = None):
        px = self._per(x_cycled, x, "x_cycled")
        if (y is None) != (y_cycled is None):
            raise ValueError("y and y_cycled must be given together")
        if y is None:
            return _reduce(px, self.reduction)
        py = self._per(y_cycled, y, "y_cycled")
        if self.reduction == "none":
            return px, py
        return _reduce(px, self.reduction) + _reduce(py, self.reduction)


class LSGANLoss(nn.Module):
    """Least-squares GAN loss (Mao et al. 2017): (D(x) - 1)^2 for real, D(x)^2 for fake.

    forward(scores (N,) or (N, 1), real: bool) -> scalar (reduction 'mean'/'sum') or (N,).
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        _reduce(torch.zeros(1), reduction)
        self.reduction = reduction

    def forward(self, scores: Tensor, real: bool) -> Tensor:
        s = scores.reshape(scores.shape[0], -1).mean(1)
        return _reduce((s - 1.0) ** 2 if real else s**2, self.reduction)


def conv_generator(channels: int = 1, hidden: int = 16) -> nn.Module:
    """Image -> image of the same shape (N, C, H, W) in [0, 1]: three 3x3 / 3x3 / 1x1 convolutions
    (receptive field 5x5, so a digit's identity is hard to rewrite) and a sigmoid."""
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, channels, 1),
        nn.Sigmoid(),
    )


def mlp_discriminator(n_inputs: int = 64, hidden: int = 64) -> nn.Module:
    """Image (N, C, H, W) -> score (N, 1) (no sigmoid: the LSGAN loss takes raw scores)."""
    return mlp(n_inputs, (hidden, hidden), 1, activation=lambda: nn.LeakyReLU(0.2), flatten=True)


def _check_pos(v, name: str, integer: bool = False, allow_zero: bool = False):
    ok = isinstance(v, numbers.Integral) if integer else isinstance(v, numbers.Real)
    if isinstance(v, bool) or not ok or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        kind = "an int" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} {'>=' if allow_zero else '>'} 0, got {v!r}")


class CycleGAN(TorchTransformerMixin, TorchEstimator):
    """Unpaired domain mapping F: source -> target, G: target -> source.

    Args:
        make_generator: () -> nn.Module mapping (N, C, H, W) to the same shape (default
            ``conv_generator(C)``); called twice (F and G).
        make_discriminator: () -> nn.Module mapping (N, C, H, W) to (N, 1) (default
            ``mlp_discriminator(C*H*W)``); called twice (D_T and D_S).
        cycle_weight, identity_weight: weights of L_cyc and L_id.
        lr: Adam learning rate (betas 0.5, 0.999 as CycleGAN); epochs: passes over the larger set;
        batch_size; device; random_state; verbose (tqdm bar).

    fit(X_source (N, C, H, W), X_target (M, C, H, W), sample_weight (N,) = None) -> self; the two
    sets are unpaired (any sizes). sample_weight weighs the source examples' terms.
    After fit: F_, G_, D_target_, D_source_ (modules), history_ (per epoch: loss_G, loss_D,
    adv_F, adv_G, cycle, identity). transform(X_source) = F(X), inverse_transform(X_target) = G(X).
    """

    def __init__(
        self,
        make_generator: Callable[[], nn.Module] | None = None,
        make_discriminator: Callable[[], nn.Module] | None = None,
        cycle_weight: float = 10.0,
        identity_weight: float = 0.0,
        lr: float = 2e-4,
        epochs: int = 50,
        batch_size: int = 64,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        self.make_generator = make_generator
        self.make_discriminator = make_discriminator
        self.cycle_weight = cycle_weight
        self.identity_weight = identity_weight
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _check(self):
        _check_pos(self.cycle_weight, "cycle_weight", allow_zero=True)
        _check_pos(self.identity_weight, "identity_weight", allow_zero=True)
        _check_pos(self.lr, "lr")
        _check_pos(self.epochs, "epochs", integer=True, allow_zero=True)
        _check_pos(self.batch_size, "batch_size", integer=True)

    @staticmethod
    def _images(X, name: str) -> Tensor:
        X = as_x(X, name)
        if X.dim() != 4:
            raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(X.shape)}")
        return X.float()

    def fit(self, X_source, X_target, sample_weight=None) -> CycleGAN:
        """X_source (N, C, H, W), X_target (M, C, H, W), unpaired; returns self."""
        from tqdm.auto import tqdm

        self._check()
        Xs = self._images(X_source, "X_source")
        Xt = self._images(X_target, "X_target")
        if Xs.shape[1:] != Xt.shape[1:]:
            raise ValueError(
                f"X_target must have the image shape {tuple(Xs.shape[1:])} of X_source, got {tuple(Xt.shape[1:])}"
            )
        w = as_weights(sample_weight, Xs.shape[0])
        gen = torch_generator(self.random_state)
        dev = torch.device(self.device) if self.device is not None else torch.device("cpu")
        C, H, W_ = Xs.shape[1:]
        torch.manual_seed(draw_seed(gen, 2**31 - 1))
        mk_g = self.make_generator or (lambda: conv_generator(C))
        mk_d = self.make_discriminator or (lambda: mlp_discriminator(C * H * W_))
        self.F_, self.G_ = mk_g().to(dev), mk_g().to(dev)
        self.D_target_, self.D_source_ = mk_d().to(dev), mk_d().to(dev)
        betas = (0.5, 0.999)
        opt_g = torch.optim.Adam(list(self.F_.parameters()) + list(self.G_.parameters()), lr=self.lr, betas=betas)
        opt_d = torch.optim.Adam(
            list(self.D_target_.parameters()) + list(self.D_source_.parameters()), lr=self.lr, betas=betas
        )
        gan, cyc = LSGANLoss("none"), CycleConsistencyLoss("none")
        ns, nt, B = Xs.shape[0], Xt.shape[0], self.batch_size
        steps = math.ceil(max(ns, nt) / B)

        def wmean(per, idx):
            if w is None:
                return per.mean()
            wb = w[idx].to(dev)
            return (wb * per).sum() / wb.sum().clamp_min(1e-12)

        self.history_ = []
        for epoch in tqdm(range(self.epochs), desc="CycleGAN", disable=not self.verbose, leave=False):
            ps = torch.cat([torch.randperm(ns, generator=gen) for _ in range(math.ceil(steps * B / ns))])
            pt = torch.cat([torch.randperm(nt, generator=gen) for _ in range(math.ceil(steps * B / nt))])
            acc = dict(loss_G=0.0, loss_D=0.0, adv_F=0.0, adv_G=0.0, cycle=0.0, identity=0.0)
            for k in range(steps):
                i_s, i_t = ps[k * B : (k + 1) * B], pt[k * B : (k + 1) * B]
                s, t = Xs[i_s].to(dev), Xt[i_t].to(dev)
                # generators
                fs, gt = self.F_(s), self.G_(t)
                adv_f = wmean(gan(self.D_target_(fs), True), i_s)
                adv_g = gan(self.D_source_(gt), True).mean()
                c_s, c_t = cyc(s, self.G_(fs), t, self.F_(gt))
                l_cyc = wmean(c_s, i_s) + c_t.mean()
                loss_g = adv_f + adv_g + self.cycle_weight * l_cyc
                l_id = torch.zeros((), device=dev)
                if self.identity_weight > 0:
                    i_t_, i_s_ = cyc(t, self.F_(t), s, self.G_(s))
                    l_id = i_t_.mean() + wmean(i_s_, i_s)
                    loss_g = loss_g + self.identity_weight * l_id
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                # discriminators on the detached fakes
                fs, gt = fs.detach(), gt.detach()
                loss_d = 0.5 * (
                    gan(self.D_target_(t), True).mean()
                    + wmean(gan(self.D_target_(fs), False), i_s)
                    + wmean(gan(self.D_source_(s), True), i_s)
                    + gan(self.D_source_(gt), False).mean()
                )
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                for key, v in (
                    ("loss_G", loss_g),
                    ("loss_D", loss_d),
                    ("adv_F", adv_f),
                    ("adv_G", adv_g),
                    ("cycle", l_cyc),
                    ("identity", l_id),
                ):
                    acc[key] += float(v.detach()) / steps
            self.history_.append({"epoch": epoch + 1, **acc})
        for m in (self.F_, self.G_, self.D_target_, self.D_source_):
            m.eval()
        return self

    def _map(self, attr: str, X, name: str):
        self._check_is_fitted()
        out = predict_logits(getattr(self, attr), self._images(X, name), self._device())
        return like_input(out, X)

    def transform(self, X_source):
        """F: source images (N, C, H, W) -> target-looking images (N, C, H, W)."""
        return self._map("F_", X_source, "X_source")

    def inverse_transform(self, X_target):
        """G: target images (M, C, H, W) -> source-looking images (M, C, H, W)."""
        return self._map("G_", X_target, "X_target")


class MappedSourceClassifier(ClassifierMixin, _SkClassifier, TorchEstimator):
    """Lampert 2019's domain-mapping recipe: map the labelled source into the target domain with a
    CycleGAN, train a classifier on (F(s_i), y_i), apply it to target images.

    Args: mapper (an unfitted ``CycleGAN``, cloned and fitted by fit, or a fitted one used as
    given when prefit=True; None: ``CycleGAN()``), model (an nn.Module classifier (N, C, H, W) ->
    logits (N, K); copied; None: Flatten - Linear(C*H*W, 64) - ReLU - Linear(64, K), K from
    y_source), lr, epochs, batch_size, random_state, verbose, device.
    fit(X_source, y_source, X_target, sample_weight=None) -> self;
    decision_function(X_target) -> logits (N, K); predict / predict_proba / score.
    Attributes: ``mapper_`` (the fitted CycleGAN), ``model_``, ``history_``, ``classes_``.
    """

    def __init__(
        self,
        mapper: CycleGAN | None = None,
        model: nn.Module | None = None,
        lr: float = 1e-3,
        epochs: int = 30,
        batch_size: int = 64,
        prefit: bool = False,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        self.mapper = mapper
        self.model = model
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.prefit = prefit
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X_source, y_source, X_target=None, sample_weight=None) -> MappedSourceClassifier:
        """X_source (N, C, H, W), y_source (N,), X_target (M, C, H, W) (unneeded when prefit)."""
        import copy

        from sklearn.base import clone

        Xs = CycleGAN._images(X_source, "X_source")
        ys = as_labels(y_source, Xs.shape[0], "y_source", "X_source")
        w = as_weights(sample_weight, Xs.shape[0])
        if self.prefit:
            if self.mapper is None:
                raise ValueError("prefit=True needs a fitted CycleGAN as mapper, got None")
            mapper = self.mapper
        else:
            if X_target is None:
                raise ValueError("X_target must be given unless prefit=True")
            mapper = clone(self.mapper) if self.mapper is not None else CycleGAN()
            mapper.fit(Xs, X_target, sample_weight=w)
        self.mapper_ = mapper
        mapped = torch.as_tensor(mapper.transform(Xs))
        gen = torch_generator(self.random_state)
        dev = self._device()
        model = self.model
        if model is None:
            model = mlp(Xs[0].numel(), (64,), max(int(ys.max()) + 1, 2), flatten=True)
        self.model_ = copy.deepcopy(model).to(dev)
        groups = [{"params": list(self.model_.parameters()), "lr": self.lr}]
        self.history_ = train_loop(
            self.model_,
            groups,
            mapped,
            ys,
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer="adam",
            gen=gen,
            device=dev,
            sample_weight=w,
            verbose=self.verbose,
            desc="classifier",
        )
        self.classes_ = np.arange(int(predict_logits(self.model_, mapped[:1], dev).shape[1]))
        return self

    def _decision(self, X) -> Tensor:
        """Target images (N, C, H, W) -> logits (N, K)."""
        return predict_logits(self.model_, as_x(X, "X"), self._device())
