"""The representation-transfer table on real cross-domain digits: SynDigits 0-4 -> MNIST 5-9 with
n_t labelled target examples, on the ``digits_cnn`` backbone (the 8x8-digit MLP version is
``tlkernels.experiments.transfer``).

One seed builds the task (``svhn_mnist_task``: n_t labelled MNIST 5-9 split into training and
validation images, a 1,500-image test set), pre-trains ONE network on the labelled source (shared
by every row that starts from it), learns the self-supervised representations from the source
images WITHOUT their labels (rotation prediction, a denoising autoencoder, sparse coding), and
runs each row. Every row whose network trains on the target goes through the same recipe
(``cnn_training.tune_target``: Adam, augmentation on / off, two step checkpoints, chosen on the
validation split by accuracy then loss), so rows differ in the starting network, in what is frozen
and in the penalty, not in the optimiser. Probes choose their regulariser on the same split.
Test accuracy is measured once, on the chosen candidate.
"""

from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import digits_cnn
from ..data import Dataset
from ..transfer import (
    Autoencoder,
    FeatureProbe,
    L2SPLoss,
    OutputConstraintLoss,
    ProgressiveNet,
    RotationPretrainer,
    SelfTaught,
    param_layers,
    transfer_layers,
)
from ._clock import PhaseClock
from .cnn_training import evaluate, train_steps, tune_target, warm_head
from .digit_tasks import svhn_mnist_task

__all__ = ["LABELS", "METHODS", "conv_decoder", "run_transfer_digits"]

LABELS = {
    "target_only": "Target only (tuned)",
    "probe_random": "Linear probe, random CNN",
    "probe_logistic": "Linear probe, pre-trained CNN",
    "probe_knn": "k-NN probe, pre-trained CNN",
    "finetune": "Fine-tuning (head warm-up)",
    "flextune": "Flextune (one block, chosen)",
    "layer_transfer": "Layer transfer (first k blocks, chosen)",
    "l2sp": "L2-SP fine-tuning",
    "lwf": "LwF (output-constrained) fine-tuning",
    "progressive": "Progressive net",
    "rotation_probe": "Rotation-pretrained probe",
    "rotation_finetune": "Rotation-pretrained fine-tuning",
    "autoencoder_probe": "Denoising-autoencoder probe",
    "autoencoder_finetune": "Denoising-autoencoder fine-tuning",
    "self_taught": "Self-taught (sparse coding)",
}
METHODS = list(LABELS)

# the target-side grid of every trained row (the SOSELETO (c) rows use the same)
TARGET_GRID = {"lrs": (1e-3,), "augs": (False, True), "checkpoints": (150, 400)}
HEAD_WARMUP = 100  # steps of a new head alone on frozen features before fine-tuning
PROBE_CS = (0.01, 0.1, 1.0, 10.0)
KNN_KS = (1, 3, 5)
L2SP_ALPHAS = (0.1, 1.0)
L2SP_BETA = 1e-3
LWF_LAMBDAS = (1.0,)  # Li & Hoiem's (2016) lambda_o = 1
LWF_TEMPERATURE = 2.0
LAYER_TRANSFER = ((1, True), (2, True), (3, True), (1, False), (3, False))  # (blocks, frozen)
SELF_TAUGHT_ALPHAS = (0.5,)


def conv_decoder(features: int = 128, channels: int = 3, width: int = 64) -> nn.Sequential:
    """A code (N, features) -> flattened image (N, channels * 32 * 32) decoder for the 32x32
    digits: Linear to a width x 4 x 4 map, three stride-2 transposed 4x4 convolutions (ReLU
    between), Flatten. The decoder of the denoising autoencoder row (mirror_decoder only mirrors
    Linear encoders)."""
    if features < 1 or channels < 1 or width < 4:
        raise ValueError(f"features and channels must be >= 1 and width >= 4, got {features}, {channels}, {width}")
    h = width // 2
    return nn.Sequential(
        nn.Linear(features, width * 16), nn.ReLU(), nn.Unflatten(1, (width, 4, 4)),
        nn.ConvTranspose2d(width, h, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(h, h // 2, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(h // 2, channels, 4, 2, 1), nn.Flatten(),
    )  # fmt: skip


def _blocks(body: nn.Module) -> list[list[str]]:
    """The body's layers grouped into blocks: each Conv / Linear layer with the normalisation
    layers after it (``param_layers`` names). digits_cnn: conv1, conv2, conv3, fc."""
    out: list[list[str]] = []
    for name, m in param_layers(body):
        if isinstance(m, (nn.Conv2d, nn.Linear)) or not out:
            out.append([name])
        else:
            out[-1].append(name)
    return out


def _freeze_all_but(net: nn.Module, names: list[str]) -> nn.Module:
    """requires_grad only for the parameters of the modules named (and their children)."""
    for n, p in net.named_parameters():
        p.requires_grad_(any(n.startswith(k + ".") for k in names))
    return net


class _TwoHeads(nn.Module):
    """body + the new target head (forward) + the source head kept on the same body (LwF)."""

    def __init__(self, body: nn.Module, head: nn.Module, old_head: nn.Module):
        super().__init__()
        self.body, self.head, self.old_head = body, head, old_head

    def forward(self, x):
        return self.head(self.body(x))


def _probe_key(est, val: Dataset) -> tuple[float, float]:
    """(validation accuracy, -validation log-loss) of a fitted probe (log-loss 0 for k-NN)."""
    Xv, yv = val.X.cpu(), val.y.cpu()
    acc = float(est.score(Xv, yv))
    if est.head != "logistic":
        return acc, 0.0
    logp = est._decision(Xv)  # log-probabilities over classes_ (the training labels: all of them)
    return acc, float(F.nll_loss(logp.float(), yv))


def _best_probe(make, grid, task, name: str):
    best = None
    for k, p in enumerate(grid):
        est = make(p).fit(task.tgt_train.X.cpu(), task.tgt_train.y.cpu())
        acc, loss = _probe_key(est, task.tgt_val)
        key = (-acc, loss, k)
        if best is None or key < best[0]:
            best = (key, p, est, acc)
    _, p, est, acc = best
    return {name: p}, float(est.score(task.test.X.cpu(), task.test.y.cpu())), acc


def run_transfer_digits(
    n_target: int = 20,
    seed: int = 0,
    methods=None,
    *,
    n_source: int = 5000,
    n_test: int = 1500,
    source_epochs: int = 3,
    rotation_epochs: int = 1,
    autoencoder_epochs: int = 3,
    n_self_taught: int = 1000,
    widths=(16, 32, 64),
    features: int = 128,
    target_grid: dict | None = None,
    cache_dir=None,
    device="cpu",
) -> dict:
    """One seed of the representation-transfer table on SynDigits 0-4 -> MNIST 5-9.

    Args:
        n_target: labelled MNIST 5-9 images (train + validation, see ``svhn_mnist_task``).
        seed: the target split and every network's initialisation.
        methods: keys of ``LABELS`` (default all).
        n_source: SynDigits 0-4 images (labelled for the pre-trained rows, labels unused by the
            rotation, autoencoder and self-taught rows); n_test: MNIST 5-9 test images; source_epochs: supervised pre-training
            passes (Adam 1e-3, batch 64); rotation_epochs / autoencoder_epochs: passes of the
            self-supervised pre-training over the same images (rotation: all four copies of each
            image per pass); n_self_taught: the first that many source images, channel-averaged
            and 2x2-pooled to 16x16 (256 pixels), for sparse coding (Raina et al. 2007).
        widths, features: the ``digits_cnn`` backbone; target_grid: ``tune_target``'s lrs / augs /
            checkpoints (default TARGET_GRID, the same for every trained row).

    Returns {"accuracy": {method: test accuracy}, "val_accuracy": {method: ...}, "chosen":
    {method: setting}, "cpu_seconds" / "seconds": per method and phase and "total",
    "pretraining": source / rotation accuracies and reconstruction error, sizes and settings}.
    """
    methods = METHODS if methods is None else list(methods)
    for m in methods:
        if m not in LABELS:
            raise ValueError(f"methods: {m!r} is not one of {METHODS}")
    if "self_taught" in methods and not 2 <= n_self_taught <= n_source:
        raise ValueError(f"n_self_taught must be in [2, n_source = {n_source}], got {n_self_taught}")
    t_start, c_start = time.perf_counter(), time.process_time()
    clock = PhaseClock()
    with clock("data"):
        task = svhn_mnist_task(n_target, seed, n_source=n_source, n_test=n_test, cache_dir=cache_dir).to(device)
    d, cs, ct = int(features), task.n_source_classes, task.n_target_classes
    tr, val, test = task.tgt_train, task.tgt_val, task.test
    grid = dict(TARGET_GRID if target_grid is None else target_grid)
    acc, val_acc, chosen, info = {}, {}, {}, {}

    def cnn() -> nn.Sequential:
        return digits_cnn(widths=widths, features=d).to(device)

    def tuned(name: str, make_net, **kw) -> None:
        setting, net, (va, _) = tune_target(make_net, tr, val, seed, **grid, **kw)
        acc[name], val_acc[name], chosen[name] = evaluate(net, test)[0], va, setting

    def best_of(name: str, runs) -> None:
        """runs: [(extra setting, (setting, net, (val acc, val loss)))] -> the best on validation."""
        k = min(range(len(runs)), key=lambda i: (-runs[i][1][2][0], runs[i][1][2][1], i))
        extra, (setting, net, (va, _)) = runs[k]
        acc[name], val_acc[name], chosen[name] = evaluate(net, test)[0], va, {**setting, **extra}

    def warmed(body: nn.Module) -> nn.Sequential:
        """A copy of body with a new target head warmed up on its frozen features."""
        net = nn.Sequential(copy.deepcopy(body), nn.Linear(d, ct)).to(device)
        warm_head(net, tr, HEAD_WARMUP, seed)
        return net

    # -- the shared starting networks: supervised source pre-training, self-supervised ones
    needs = set(methods)
    pre = None
    if needs & {"probe_logistic", "probe_knn", "finetune", "flextune", "layer_transfer", "l2sp", "lwf", "progressive"}:
        torch.manual_seed(seed)
        pre = nn.Sequential(cnn(), nn.Linear(d, cs).to(device))
        with clock("pretrain"):
            train_steps(pre, task.source, source_epochs * math.ceil(len(task.source) / 64), 1e-3, seed=seed)
        info["source_train_accuracy"] = evaluate(pre, task.source)[0]
    rot = ae = None
    if needs & {"rotation_probe", "rotation_finetune"}:
        torch.manual_seed(seed)
        with clock("pretrain_rotation"):
            rot = RotationPretrainer(cnn(), d, epochs=rotation_epochs, batch_size=64, device=device,
                                     random_state=seed).fit(task.source.X)  # fmt: skip
        info["rotation_accuracy_source"] = float(rot.score(task.source.X[:1000]))
        info["rotation_accuracy_target_test"] = float(rot.score(test.X))
    if needs & {"autoencoder_probe", "autoencoder_finetune"}:
        torch.manual_seed(seed)
        with clock("pretrain_autoencoder"):
            ae = Autoencoder(cnn(), conv_decoder(d), noise="mask", noise_level=0.2, epochs=autoencoder_epochs,
                             batch_size=64, device=device, random_state=seed).fit(task.source.X)  # fmt: skip
        info["autoencoder_mse_source"] = -float(ae.score(task.source.X[:1000]))
        info["autoencoder_mse_target_test"] = -float(ae.score(test.X))

    def probe(name, extractor, head, grid_):
        key = "C" if head == "logistic" else "n_neighbors"
        with clock(name):
            setting, a, va = _best_probe(
                lambda p: FeatureProbe(extractor, head, random_state=seed, **{key: p}), grid_, task, key
            )
        acc[name], val_acc[name], chosen[name] = a, va, setting

    for name in methods:
        if name == "target_only":
            with clock(name):
                tuned(name, lambda: nn.Sequential(cnn(), nn.Linear(d, ct).to(device)))
        elif name == "probe_random":
            torch.manual_seed(seed + 7)
            probe(name, cnn(), "logistic", PROBE_CS)
        elif name == "probe_logistic":
            probe(name, pre[0], "logistic", PROBE_CS)
        elif name == "probe_knn":
            probe(name, pre[0], "knn", KNN_KS)
        elif name == "finetune":
            with clock(name):
                tuned(name, lambda: nn.Sequential(copy.deepcopy(pre[0]), nn.Linear(d, ct).to(device)),
                      head_warmup=HEAD_WARMUP)  # fmt: skip
        elif name == "flextune":  # Royer & Lampert 2020: one block trains, the rest stays
            with clock(name):
                torch.manual_seed(seed)
                start = warmed(pre[0])
                cands = [[f"0.{n}" for n in block] for block in _blocks(start[0])] + [["1"]]
                runs = [({"block": b[0], "head_warmup": HEAD_WARMUP}, tune_target(lambda b=b: _freeze_all_but(copy.deepcopy(start), b), tr, val,
                                                      seed, **grid)) for b in cands]  # fmt: skip
            best_of(name, runs)
        elif name == "layer_transfer":  # Yosinski et al. 2014: the first k blocks copied, frozen or not
            blocks = _blocks(pre[0])

            def copied(k: int, frozen: bool) -> nn.Sequential:
                body = cnn()  # a fresh initialisation (tune_target seeds it)
                names = transfer_layers(pre[0], body, sum(len(b) for b in blocks[:k]), "first")
                net = nn.Sequential(body, nn.Linear(d, ct).to(device))
                if frozen:
                    for n, p in net.named_parameters():
                        p.requires_grad_(not any(n.startswith(f"0.{c}.") for c in names))
                return net

            with clock(name):
                runs = [({"blocks": k, "frozen": fr}, tune_target(lambda k=k, fr=fr: copied(k, fr), tr, val, seed,
                                                                  **grid)) for k, fr in LAYER_TRANSFER]  # fmt: skip
            best_of(name, runs)
        elif name == "l2sp":  # Li, Grandvalet & Davoine 2018: pulled towards the source weights
            ref = {f"0.{k}": v for k, v in pre[0].state_dict().items()}
            runs = []
            with clock(name):
                for a in L2SP_ALPHAS:
                    pen = L2SPLoss(ref, a, L2SP_BETA)

                    def loss(m, x, y, pen=pen):
                        return F.cross_entropy(m(x), y) + pen(m)

                    runs.append(({"alpha": a, "beta": L2SP_BETA}, tune_target(
                        lambda: nn.Sequential(copy.deepcopy(pre[0]), nn.Linear(d, ct).to(device)), tr, val, seed,
                        head_warmup=HEAD_WARMUP, loss_fn=loss, **grid)))  # fmt: skip
            best_of(name, runs)
        elif name == "lwf":  # Li & Hoiem 2016: the source head's outputs kept on the target images
            oc = OutputConstraintLoss(pre, LWF_TEMPERATURE).to(device)
            runs = []
            with clock(name):
                for lam in LWF_LAMBDAS:

                    def loss(m, x, y, lam=lam):
                        f = m.body(x)
                        return F.cross_entropy(m.head(f), y) + lam * oc(x, m.old_head(f))

                    def make():
                        net = warmed(pre[0])
                        return _TwoHeads(net[0], net[1], copy.deepcopy(pre[1]))

                    runs.append(({"lambda": lam, "T": LWF_TEMPERATURE, "head_warmup": HEAD_WARMUP},
                                 tune_target(make, tr, val, seed, loss_fn=loss, **grid)))  # fmt: skip
            best_of(name, runs)
        elif name == "progressive":  # Rusu et al. 2016: a new column with laterals from the frozen source one

            def make_prog():
                net = ProgressiveNet(pre)
                net.add_column(nn.Sequential(cnn(), nn.Linear(d, ct)))
                return net.to(device)

            with clock(name):
                tuned(name, make_prog)
        elif name == "rotation_probe":
            probe(name, rot.backbone_, "logistic", PROBE_CS)
        elif name == "rotation_finetune":
            with clock(name):
                tuned(name, lambda: nn.Sequential(copy.deepcopy(rot.backbone_), nn.Linear(d, ct).to(device)),
                      head_warmup=HEAD_WARMUP)  # fmt: skip
        elif name == "autoencoder_probe":
            probe(name, ae.encoder_, "logistic", PROBE_CS)
        elif name == "autoencoder_finetune":
            with clock(name):
                tuned(name, lambda: nn.Sequential(copy.deepcopy(ae.encoder_), nn.Linear(d, ct).to(device)),
                      head_warmup=HEAD_WARMUP)  # fmt: skip
        elif name == "self_taught":
            with clock(name):
                _self_taught(task, seed, n_self_taught, acc, val_acc, chosen)

    return {
        "experiment": "transfer-digits", "source": "SynDigits 'syn' 0-4", "target": "MNIST 5-9",
        "n_target": n_target, "n_train": len(tr), "n_val": len(val), "n_test": len(test),
        "n_source": len(task.source), "seed": seed, "widths": list(widths), "features": d,
        "source_epochs": source_epochs, "rotation_epochs": rotation_epochs,
        "autoencoder_epochs": autoencoder_epochs, "n_self_taught": n_self_taught,
        "target_grid": {k: list(v) for k, v in grid.items()}, "head_warmup": HEAD_WARMUP,
        "methods": methods, "accuracy": acc, "val_accuracy": val_acc, "chosen": chosen, "pretraining": info,
        "cpu_seconds": {**clock.cpu_seconds, "total": time.process_time() - c_start},
        "seconds": {**clock.seconds, "total": time.perf_counter() - t_start}, "threads": torch.get_num_threads(),
    }  # fmt: skip


def _gray16(X: torch.Tensor) -> torch.Tensor:
    """(N, 3, 32, 32) -> (N, 256): channel mean, 2x2 average pool, flattened."""
    return F.avg_pool2d(X.mean(1, keepdim=True), 2).flatten(1).cpu()


def _self_taught(task, seed, n_unlabelled, acc, val_acc, chosen) -> None:
    from sklearn.exceptions import ConvergenceWarning

    tr, val, test = task.tgt_train, task.tgt_val, task.test
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for alpha in SELF_TAUGHT_ALPHAS:
            st = SelfTaught(128, "sparse_coding", alpha=alpha, random_state=seed)
            st.fit_representation(_gray16(task.source.X[:n_unlabelled]))
            for C in PROBE_CS:
                st.C = C
                st.fit(_gray16(tr.X), tr.y.cpu())
                va = float(st.score(_gray16(val.X), val.y.cpu()))
                logp = st._decision(_gray16(val.X))
                key = (-va, float(F.nll_loss(logp.float(), val.y.cpu())))
                if best is None or key < best[0]:
                    best = (key, {"alpha": alpha, "C": C}, float(st.score(_gray16(test.X), test.y.cpu())), va)
    _, setting, a, va = best
    acc["self_taught"], val_acc["self_taught"], chosen["self_taught"] = a, va, setting


def table(results: list[dict]) -> str:
    """Markdown: mean ± std (test accuracy %) and the per-seed values of each method over the
    run_transfer_digits results of several seeds."""
    seeds = [r["seed"] for r in results]
    out = [f"| method | mean ± std ({len(seeds)} seeds) | per seed ({', '.join(map(str, seeds))}) |", "|---|---|---|"]
    for m in results[0]["methods"]:
        v = np.array([r["accuracy"][m] for r in results]) * 100
        out.append(f"| {LABELS[m]} | {v.mean():.1f} ± {v.std():.1f} | {' / '.join(f'{x:.1f}' for x in v)} |")
    return "\n".join(out)
