"""Self-supervised and unsupervised pretraining on unlabeled images.

- Rotation prediction (Gidaris et al. 2018; the auxiliary task of Lampert 2019 and Yan et al.
  2020): every image is shown at 0, 90, 180 and 270 degrees and a network learns which rotation
  it sees. The task itself (rotated copies, labels, accuracy) lives in ``tlkernels.selfsup`` and
  is shared with the dataserver's experts and its label-free FastAdapt score;
  ``RotationPretrainer`` is the estimator around it.
- Autoencoders (plain and denoising): an encoder phi and a decoder g trained to reconstruct X from
  phi(X) (from a corrupted X for the denoising variant).

Both give a feature extractor (``encoder_`` / ``backbone_``) for FeatureProbe or FineTune.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .._base import TorchEstimator, TorchTransformerMixin, like_input
from .._deprecation import moved_names
from .._seeding import draw_seed, seed_global_torch
from ..nn import mlp
from ..selfsup import N_ROTATIONS as _N_ROTATIONS
from ..selfsup import SmallCNN, rotation_accuracy, rotation_history
from ._common import as_weights, predict_logits, torch_generator, train_loop

__all__ = ["Autoencoder", "RotationPretrainer", "mirror_decoder", "rotation_accuracy"]

# The rotation task (N_ROTATIONS, rotate4, rotation_accuracy) and its trainer live in
# tlkernels.selfsup; N_ROTATIONS and rotate4, defined here before, keep this path for one release.
__getattr__ = moved_names(__name__, {"N_ROTATIONS": "tlkernels.selfsup", "rotate4": "tlkernels.selfsup"})


class RotationPretrainer(TorchTransformerMixin, TorchEstimator):
    """Trains backbone + a 4-way head to predict the rotation of unlabeled images.

    Args:
        backbone: nn.Module X (N, C, H, W) -> features (N, F) (deep-copied); None: the body of
            ``tlkernels.selfsup.SmallCNN(C)`` (two convolutions, global average pooling, F = 32).
        feature_dim: F (the head is nn.Linear(F, 4)); None: found by one forward pass.
        lr, epochs, batch_size, weight_decay: Adam on all four rotations of every image.
        device, random_state, verbose.

    fit(X, sample_weight=None): X (N, C, H, W) unlabeled; a weight per image applies to its
    four copies. Attributes: ``backbone_`` (the trained feature extractor), ``model_``
    (backbone + head, rotation logits), ``history_``. transform(X) = backbone_ features (N, F);
    score(X) = rotation_accuracy.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        feature_dim: int | None = None,
        *,
        lr: float = 1e-3,
        epochs: int = 30,
        batch_size: int = 128,
        weight_decay: float = 0.0,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if feature_dim is not None and not (isinstance(feature_dim, int) and feature_dim > 0):
            raise ValueError(f"feature_dim must be None or a positive int, got {feature_dim!r}")
        self.backbone, self.feature_dim, self.lr, self.epochs = backbone, feature_dim, lr, epochs
        self.batch_size, self.weight_decay = batch_size, weight_decay
        self.device = device
        self.random_state, self.verbose = random_state, verbose

    def fit(self, X, y=None, sample_weight=None) -> RotationPretrainer:
        """X (N, C, H, W) unlabeled square images (y is ignored), sample_weight (N,); returns self."""
        X = self._validate_X(X, reset=True, min_ndim=4)
        w = as_weights(sample_weight, X.shape[0])
        gen = torch_generator(self.random_state)
        seed_global_torch(gen)
        device = self._device()
        backbone = copy.deepcopy(self.backbone if self.backbone is not None else SmallCNN(X.shape[1]).body)
        backbone = backbone.to(device)
        feature_dim = self.feature_dim
        if feature_dim is None:
            feature_dim = int(predict_logits(backbone, X[:1], device).shape[1])
        model = nn.Sequential(backbone, nn.Linear(feature_dim, _N_ROTATIONS)).to(device)
        self.history_ = rotation_history(
            model,
            X,
            self.epochs,
            self.lr,
            self.batch_size,
            verbose=self.verbose,
            optimizer="adam",
            weight_decay=self.weight_decay,
            sample_weight=w,
            sampling="copies",
            generator=gen,
            device=device,
        )
        self.model_, self.backbone_ = model.eval(), backbone.eval()
        return self

    def transform(self, X):
        """X (N, C, H, W) -> the trained backbone's features (N, F)."""
        self._check_is_fitted()
        return like_input(
            predict_logits(self.backbone_, self._validate_X(X, reset=False, min_ndim=4), self._device()), X
        )

    def score(self, X, y=None) -> float:
        """Rotation accuracy on the four rotations of X (N, C, H, W) (y is ignored)."""
        self._check_is_fitted()
        return rotation_accuracy(self.model_, X, self._device())


def mirror_decoder(encoder: nn.Module) -> nn.Sequential:
    """Lampert 2019's "mirrored copy of the feature layers": for an encoder made of nn.Linear layers
    (+ parameter-free modules), Linear layers in reverse order with ReLU between them (and none
    at the output). Output (N, input width of the encoder's first Linear). An encoder with
    convolutions is refused (a ValueError naming decoder=): its mirror would not be an image."""
    convs = [type(m).__name__ for m in encoder.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if convs:
        raise ValueError(
            f"encoder has convolutions ({', '.join(sorted(set(convs)))}); mirror_decoder mirrors only nn.Linear "
            "layers and would not reach the input's shape: pass decoder= explicitly (code -> flattened input)"
        )
    lins = [m for m in encoder.modules() if isinstance(m, nn.Linear)]
    if not lins:
        raise ValueError("encoder has no nn.Linear layer to mirror; pass decoder= explicitly")
    layers: list[nn.Module] = []
    for i, m in enumerate(reversed(lins)):
        layers.append(nn.Linear(m.out_features, m.in_features))
        if i < len(lins) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Autoencoder(TorchTransformerMixin, TorchEstimator):
    """min ||X - g(phi(X~))||^2 over encoder phi and decoder g; X~ = X (plain) or a corrupted X
    (denoising: noise='gaussian' adds N(0, noise_level^2), noise='mask' zeroes a fraction
    noise_level of the inputs).

    Args:
        encoder: nn.Module X (N, ...) -> code (N, D) (deep-copied); None: Linear(n_features, 32) -
            ReLU on the flattened input, built at fit.
        decoder: nn.Module code -> flattened X (N, prod(X.shape[1:])); default mirror_decoder.
        noise: None (plain), 'gaussian' or 'mask'; noise_level.
        lr, epochs, batch_size, weight_decay, device, random_state, verbose.

    fit(X, sample_weight=None); transform(X) -> codes (N, D). Attributes ``encoder_``,
    ``decoder_``, ``history_``; score(X) = minus the mean squared reconstruction error.
    """

    def __init__(
        self,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        *,
        noise: str | None = None,
        noise_level: float = 0.3,
        lr: float = 1e-3,
        epochs: int = 50,
        batch_size: int = 64,
        weight_decay: float = 0.0,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if noise not in (None, "gaussian", "mask"):
            raise ValueError(f"noise must be None, 'gaussian' or 'mask', got {noise!r}")
        if noise is not None and not 0 < noise_level:
            raise ValueError(f"noise_level must be positive, got {noise_level}")
        if noise == "mask" and not noise_level < 1:
            raise ValueError(f"noise_level of 'mask' must be < 1, got {noise_level}")
        self.encoder, self.decoder, self.noise, self.noise_level = encoder, decoder, noise, noise_level
        self.lr, self.epochs, self.batch_size, self.weight_decay = lr, epochs, batch_size, weight_decay
        self.device = device
        self.random_state, self.verbose = random_state, verbose

    def _corrupt(self, x: Tensor, gen: torch.Generator) -> Tensor:
        if self.noise == "gaussian":
            return x + self.noise_level * torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
        if self.noise == "mask":
            return x * (torch.rand(x.shape, generator=gen) >= self.noise_level).to(x.device, x.dtype)
        return x

    def fit(self, X, y=None, sample_weight=None) -> Autoencoder:
        """X (N, ...) (y is ignored), sample_weight (N,) or None; returns self."""
        X = self._validate_X(X, reset=True)
        w = as_weights(sample_weight, X.shape[0])
        gen = torch_generator(self.random_state)
        seed_global_torch(gen)
        device = self._device()
        encoder = self.encoder if self.encoder is not None else mlp(X[0].numel(), (32,), flatten=X.dim() > 2)
        enc = copy.deepcopy(encoder).to(device)
        dec = (copy.deepcopy(self.decoder) if self.decoder is not None else mirror_decoder(enc)).to(device)
        noise_gen = torch.Generator().manual_seed(draw_seed(gen))
        both = nn.ModuleDict({"encoder": enc, "decoder": dec})

        def loss_fn(m, xb, _):
            rec = m["decoder"](m["encoder"](self._corrupt(xb, noise_gen)))
            flat = xb.flatten(1)
            if rec.shape != flat.shape:
                raise ValueError(
                    f"decoder output {tuple(rec.shape)} must match the flattened input {tuple(flat.shape)}"
                )
            return (rec - flat).pow(2).mean(1)

        self.history_ = train_loop(
            both,
            [{"params": both.parameters(), "lr": self.lr, "weight_decay": self.weight_decay}],
            X,
            None,
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer="adam",
            gen=gen,
            device=device,
            sample_weight=w,
            loss_fn=loss_fn,
            verbose=self.verbose,
            desc="autoencoder",
        )
        self.encoder_, self.decoder_ = enc.eval(), dec.eval()
        return self

    @torch.no_grad()
    def transform(self, X):
        """X (N, ...) -> codes (N, D) (numpy for numpy X, a tensor for a tensor)."""
        self._check_is_fitted()
        return like_input(predict_logits(self.encoder_, self._validate_X(X, reset=False), self._device()), X)

    @torch.no_grad()
    def score(self, X, y=None) -> float:
        """Minus the mean squared reconstruction error on X (N, ...) (y is ignored)."""
        self._check_is_fitted()
        X = self._validate_X(X, reset=False)
        rec = predict_logits(nn.Sequential(self.encoder_, self.decoder_), X, self._device())
        return -float((rec - X.flatten(1)).pow(2).mean())
