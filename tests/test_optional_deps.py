"""The library apart from its applications: optional dependencies are imported on first use and
their absence names the extra to install; nothing switches matplotlib's backend."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_without(modules: list[str], code: str) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter in which importing any of `modules` fails."""
    block = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True, timeout=120)


def test_core_imports_without_service_and_plots():
    r = run_without(
        ["fastapi", "uvicorn", "httpx", "matplotlib"],
        "import tlkernels, tlkernels.selection.dataserver, tlkernels.transfer, tlkernels.cli\n"
        "from tlkernels import KMeans\nprint('ok')",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_service_without_fastapi_names_the_extra():
    r = run_without(["fastapi"], "import tlkernels.selection.dataserver.service")
    assert r.returncode != 0
    assert "pip install 'tlkernels[service]'" in r.stderr, r.stderr


def test_client_without_httpx_names_the_extra():
    r = run_without(["httpx"], "from tlkernels.selection.dataserver import DataServerClient\nDataServerClient()")
    assert r.returncode != 0
    assert "pip install 'tlkernels[service]'" in r.stderr, r.stderr


def test_plots_without_matplotlib_name_the_extra():
    r = run_without(["matplotlib", "matplotlib.figure"], "from tlkernels._plots import subplots\nsubplots()")
    assert r.returncode != 0
    assert "pip install 'tlkernels[plots]'" in r.stderr, r.stderr


def test_plotting_keeps_the_users_backend(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is in the plots extra")
    code = (
        "import matplotlib\nmatplotlib.use('svg')\n"
        "from tlkernels.transfer.finetune import plot_tradeoff\n"
        "r = {'lrs': [0.1], 'epochs': [0, 1], 'curves': {0.1: [0.5, 0.6]}}\n"
        f"plot_tradeoff(r, {str(tmp_path / 'p.png')!r})\n"
        "import matplotlib.pyplot as plt\nprint(matplotlib.get_backend(), len(plt.get_fignums()))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["svg", "0"]
    assert (tmp_path / "p.png").stat().st_size > 0


def test_no_module_calls_matplotlib_use():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "python" / "tlkernels").rglob("*.py")
        if re.search(r"^\s*(matplotlib|mpl)\.use\(", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []
