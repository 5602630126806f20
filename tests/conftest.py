"""Shared test fixtures: the backends, per-dtype tolerances, poisoned outputs."""

from __future__ import annotations

import pytest
import torch

from tlkernels.ops import BACKEND_NAMESPACES, BUILD_INFO

# Tolerances against a float64 reference, defined once per dtype.
TOLERANCES = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
}


def _backend_params():
    params = [pytest.param(("cpu", "tlkernels", "cpu"), id="cpu")]
    emu_skip = (
        []
        if "tlkernels_emu" in BACKEND_NAMESPACES
        else [pytest.mark.skip(reason="emulator backend not built (TLK_EMU=OFF)")]
    )
    params.append(pytest.param(("emu", "tlkernels_emu", "cpu"), id="emu", marks=emu_skip))
    if not BUILD_INFO["cuda"]:
        cuda_skip = [pytest.mark.skip(reason="CUDA kernels not built (no nvcc or CPU-only torch)")]
    elif not torch.cuda.is_available():
        cuda_skip = [
            pytest.mark.skip(reason="no GPU on this machine: the CUDA device code runs through the emu backend")
        ]
    else:
        cuda_skip = []
    params.append(pytest.param(("cuda", "tlkernels", "cuda"), id="cuda", marks=cuda_skip))
    return params


BACKENDS = _backend_params()


class Backend:
    """One backend under test: ``op(name)`` returns the op of its namespace, ``device`` its device."""

    def __init__(self, name: str, namespace: str, device: str):
        self.name, self.namespace, self.device = name, namespace, torch.device(device)

    def op(self, name: str):
        return getattr(getattr(torch.ops, self.namespace), name)

    def __repr__(self) -> str:
        return f"Backend({self.name})"


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    return Backend(*request.param)


@pytest.fixture(autouse=True)
def poisoned_outputs():
    """Every op output starts as NaN (or -1), so an element a kernel does not write shows."""
    torch.ops.tlkernels._set_poison_outputs(True)
    yield
    torch.ops.tlkernels._set_poison_outputs(False)


def assert_close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """Compares got (any dtype) with a float64 reference using the tolerance of `dtype` (default:
    got's dtype); NaN anywhere fails."""
    dtype = dtype or got.dtype
    torch.testing.assert_close(
        got.to(torch.float64).cpu(), expected.to(torch.float64).cpu(), equal_nan=False, **TOLERANCES[dtype]
    )
