"""The `tlkernels` command: the README's main job and the subcommands that write files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tlkernels.cli import main


def test_info_self_checks_every_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "self-check" in out and "FAIL" not in out and "ok   cpu" in out


def test_info_names_the_kmeans_cpu_level(capsys, monkeypatch):
    monkeypatch.setenv("TLK_KMEANS_SIMD", "scalar")
    assert main(["info"]) == 0
    assert "k-means CPU kernels : scalar" in capsys.readouterr().out


def test_demo_writes_its_table_plot_and_json(tmp_path, capsys):
    plot, js = tmp_path / "demo.png", tmp_path / "demo.json"
    assert main(["demo", "--epochs", "3", "--quiet", "--plot", str(plot), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "SOSELETO" in out and "alpha AUROC" in out
    assert plot.stat().st_size > 0
    r = json.loads(js.read_text())
    assert set(r["accuracy"]) == {"target_only", "fine_tuning", "soseleto", "soseleto_ft"}
    assert 0.0 <= r["auroc"] <= 1.0


def test_dataserver_build_from_npz_and_an_image_folder(tmp_path, capsys):
    from PIL import Image

    from tlkernels.selection.dataserver import Store

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", X=rng.random((40, 1, 8, 8), dtype=np.float32), y=np.arange(40) % 4)
    for c in ("cats", "dogs"):
        os.makedirs(tmp_path / "imgs" / c)
        for k in range(5):
            Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).save(tmp_path / "imgs" / c / f"{k}.png")
    store_dir = tmp_path / "store"
    assert (
        main(
            [
                "dataserver",
                "build",
                "--store",
                str(store_dir),
                "--npz",
                f"a={tmp_path / 'a.npz'}",
                "--image-folder",
                f"pets={tmp_path / 'imgs'}",
                "--grayscale",
                "--partitions",
                "2",
                "--expert-epochs",
                "1",
            ]
        )
        == 0
    )
    store = Store(str(store_dir))
    assert [d.name for d in store.datasets] == ["a", "pets"] and store.size == 50
    assert store.partitions is not None and os.path.exists(store_dir / "experts" / "manifest.json")
    with pytest.raises(SystemExit, match="NAME=PATH"):
        main(["dataserver", "build", "--store", str(tmp_path / "x"), "--npz", "missing-equals"])


def test_soseleto_domain_writes_its_table_and_json(tmp_path, capsys):
    js = tmp_path / "domain.json"
    assert (
        main(["soseleto", "--experiment", "domain", "--n-target", "20", "--epochs", "2", "--quiet", "--json", str(js)])
        == 0
    )
    out = capsys.readouterr().out
    assert "Fine-tuning" in out and "SOSELETO (shared head)" in out and "alpha soseleto" in out
    r = json.loads(js.read_text())
    assert set(r["accuracy"]) == {
        "target_only",
        "fine_tuning",
        "soseleto",
        "soseleto_ft",
        "soseleto_shared",
        "soseleto_shared_ft",
    }
    assert r["shift"] == "rotation" and r["n_target"] == 20 and len(r["alpha"]["soseleto"]["mean_per_class"]) == 10
    assert all(0.0 <= v <= 1.0 for v in r["accuracy"].values())


def test_soseleto_disjoint_with_a_shift_writes_its_json(tmp_path, capsys):
    js = tmp_path / "disjoint.json"
    assert (
        main(
            [
                "soseleto",
                "--experiment",
                "disjoint",
                "--shift",
                "blur_noise",
                "--n-target",
                "20",
                "--epochs",
                "2",
                "--quiet",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    r = json.loads(js.read_text())
    assert r["shift"] == "blur_noise" and r["n_target"] == 20 and set(r["linear_probe"]) == {"pretrained", "random"}
    assert set(r["accuracy"]) == {"target_only", "fine_tuning", "soseleto", "soseleto_ft"}
    with pytest.raises(ValueError, match="shift must be None or one of"):
        from tlkernels.experiments.soseleto import run_disjoint

        run_disjoint(shift="flip")


def test_soseleto_device_is_checked():
    with pytest.raises(SystemExit, match="--device"):
        main(["soseleto", "--experiment", "synthetic", "--device", "nonsense", "--quiet"])
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device is visible"):
            main(["demo", "--device", "cuda", "--quiet"])


def test_every_subcommand_registers_through_the_table():
    """cli.COMMANDS names every module and the subcommands its add_parser registers; the parser
    has exactly those."""
    import argparse

    from tlkernels.cli import COMMANDS, build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    listed = [name.strip() for _, names in COMMANDS for name in names.split(",")]
    assert sorted(action.choices) == sorted(listed)
    assert {
        "info",
        "demo",
        "soseleto",
        "dataserver",
        "serve",
        "dann",
        "transfer",
        "distill",
        "zeroshot",
        "stc",
        "mapping",
        "multitask",
        "domaingen",
        "weak",
    } <= set(listed)
    for name, sub in action.choices.items():
        assert callable(sub.get_default("func")) or name == "dataserver", name


def test_soseleto_runs_each_experiment_with_its_defaults(monkeypatch, capsys):
    """Every --experiment choice reaches its runner, once per seed, with its default n_target and
    epochs (runners replaced by recorders: this checks the dispatch, not the experiments)."""
    import argparse

    from tlkernels.cli import build_parser
    from tlkernels.commands import soseleto as cmd
    from tlkernels.experiments import soseleto as ex
    from tlkernels.experiments import soseleto_digits

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = next(a for a in sub.choices["soseleto"]._actions if a.dest == "experiment").choices
    assert set(choices) == set(cmd._EXPERIMENTS)

    calls = []

    def recorder(name):
        def run(**kw):
            calls.append((name, kw.get("n_target"), kw.get("epochs", kw.get("source_epochs")), kw["seed"]))
            return {"seed": kw["seed"], "auroc": 0.5, "target_accuracy": 0.5, "accuracy": {"soseleto": 0.5}}

        return run

    for name in ("run_synthetic", "run_noisy", "run_disjoint"):
        monkeypatch.setattr(ex, name, recorder(name))
    monkeypatch.setattr(soseleto_digits, "run_svhn_mnist", recorder("run_svhn_mnist"))
    monkeypatch.setattr(soseleto_digits, "print_table", lambda results: None)
    expected = {
        "synthetic": ("run_synthetic", None, 60),
        "noisy": ("run_noisy", 100, 30),
        "disjoint": ("run_disjoint", 25, 30),
        "svhn-mnist": ("run_svhn_mnist", 20, 3),
    }
    for experiment, (runner, n_target, epochs) in expected.items():
        calls.clear()
        assert main(["soseleto", "--experiment", experiment, "--seed", "4", "--seeds", "2", "--quiet"]) == 0
        assert calls == [(runner, n_target, epochs, 4), (runner, n_target, epochs, 5)], experiment
