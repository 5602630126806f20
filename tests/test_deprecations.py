"""Moved public names keep their old import path for one release: each old path gives the object
of the new one with a DeprecationWarning naming both, and nothing else in the old module warns."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

import tlkernels.cli
import tlkernels.multitask.context
import tlkernels.nn
import tlkernels.selfsup
import tlkernels.transfer
import tlkernels.transfer.selfsup
from tlkernels._deprecation import moved_names


def fresh_import(name: str):
    """Imports module `name` again (its module-level warning fires once per import)."""
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.mark.parametrize("module", [tlkernels.transfer.selfsup, tlkernels.transfer], ids=lambda m: m.__name__)
@pytest.mark.parametrize("name", ["rotate4", "N_ROTATIONS"])
def test_rotation_task_names_moved_to_selfsup(module, name):
    with pytest.warns(DeprecationWarning, match=rf"{module.__name__}\.{name} moved to tlkernels\.selfsup\.{name}"):
        obj = getattr(module, name)
    assert obj is getattr(tlkernels.selfsup, name)
    assert name not in module.__all__


def test_from_import_of_a_moved_name_warns_at_the_caller():
    with pytest.warns(DeprecationWarning) as record:
        from tlkernels.transfer import rotate4  # noqa: F401
    assert record[0].filename == __file__


def test_context_mlp_moved_to_nn():
    with pytest.warns(DeprecationWarning, match=r"tlkernels\.multitask\.context\.mlp moved to tlkernels\.nn\.mlp"):
        mlp = tlkernels.multitask.context.mlp
    assert mlp is tlkernels.nn.mlp
    assert [type(m).__name__ for m in mlp(4, (8,), 2)] == ["Linear", "ReLU", "Linear"]


def test_cli_experiment_modules_replaced_by_commands():
    with pytest.warns(
        DeprecationWarning, match=r"tlkernels\.cli\.EXPERIMENT_MODULES moved to tlkernels\.cli\.COMMANDS"
    ):
        names = tlkernels.cli.EXPERIMENT_MODULES
    assert sorted(names) == sorted(["zeroshot", "distill", "selftaught_mapping", "weak", "multitask"])
    for name in names:  # each still registers its subcommands
        assert callable(importlib.import_module(f"tlkernels.experiments.{name}").add_parser)


def test_experiments_cli_module_moved_to_commands_common():
    from tlkernels.commands import common

    with pytest.warns(DeprecationWarning, match=r"tlkernels\.experiments\._cli moved to tlkernels\.commands\.common"):
        old = fresh_import("tlkernels.experiments._cli")
    for name in ("add_common_args", "seeds_of", "write_outputs"):
        assert getattr(old, name) is getattr(common, name)


def test_persample_reps_module_moved_to_persample_reps():
    from tlkernels.persample import reps

    with pytest.warns(DeprecationWarning, match=r"tlkernels\.persample_reps moved to tlkernels\.persample\.reps"):
        old = fresh_import("tlkernels.persample_reps")
    for name in ("ghost_is_cheaper", "gram", "numel_per_sample", "LinearRep"):
        assert getattr(old, name) is getattr(reps, name)


@pytest.mark.parametrize(
    "module", [tlkernels.transfer, tlkernels.transfer.selfsup, tlkernels.multitask.context, tlkernels.cli]
)
def test_current_names_do_not_warn_and_unknown_names_raise(module):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in module.__all__:
            getattr(module, name)
        exec(f"from {module.__name__} import *", {})
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018


def test_moved_names_checks_its_table():
    with pytest.raises(ValueError, match="moved must map names to module paths"):
        moved_names("m", {"x": ""})
