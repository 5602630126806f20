"""Gradient reversal: the two backward ops on every backend against the reference, their
checks, opcheck / gradcheck / torch.compile, and the GradientReversal module."""

from __future__ import annotations

import math

import pytest
import torch

import tlkernels
from conftest import assert_close
from tlkernels import reference
from tlkernels.ops import BACKEND_NAMESPACES

SHAPES = [(0,), (1,), (3,), (31,), (257,), (1031,), (4099,), (7, 13, 3), (2, 1, 65, 5)]
LAYOUTS = ["contiguous", "transposed", "strided", "offset"]


def make(shape, dtype, device, layout, gen):
    """A tensor of `shape` with the given memory layout; values from `gen`."""
    if layout == "contiguous":
        return torch.randn(shape, dtype=torch.float64, generator=gen).to(dtype).to(device)
    if layout == "transposed":  # same values, transposed storage
        base = torch.randn(tuple(reversed(shape)), dtype=torch.float64, generator=gen).to(dtype).to(device)
        return base.permute(*reversed(range(len(shape))))
    if layout == "strided":  # every other element of the last dimension
        big = torch.randn(tuple(shape[:-1]) + (2 * shape[-1],), dtype=torch.float64, generator=gen)
        return big.to(dtype).to(device)[..., ::2]
    if layout == "offset":  # contiguous but 4/8 bytes off a 16-byte boundary: the scalar path
        n = math.prod(shape)
        flat = torch.randn(n + 1, dtype=torch.float64, generator=gen).to(dtype).to(device)
        return flat[1:].view(shape)
    raise AssertionError(layout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_ops_match_reference(backend, dtype, shape, layout):
    gen = torch.Generator().manual_seed(hash((shape, layout)) % 2**31)
    task = make(shape, dtype, backend.device, layout, gen)
    adv = make(shape, dtype, backend.device, layout, gen)
    lam = 0.37
    got = backend.op("grad_reverse_backward")(adv, lam, None)
    assert got.shape == adv.shape and got.dtype == dtype and got.device.type == backend.device.type
    assert_close(got, reference.grad_reverse_backward(adv.double(), lam), dtype)
    got = backend.op("grad_reverse_branch_backward")(task, adv, lam, None)
    assert got.shape == adv.shape and got.dtype == dtype
    assert_close(got, reference.grad_reverse_branch_backward(task.double(), adv.double(), lam), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bitwise_equal_to_same_dtype_reference(backend, dtype):
    """The kernels round like PyTorch's own mul then sub (no FMA contraction): equal to the bit."""
    gen = torch.Generator().manual_seed(1)
    task = torch.randn(10007, dtype=dtype, generator=gen).to(backend.device)
    adv = torch.randn(10007, dtype=dtype, generator=gen).to(backend.device)
    lam = 0.3
    assert torch.equal(backend.op("grad_reverse_backward")(adv, lam, None), reference.grad_reverse_backward(adv, lam))
    assert torch.equal(
        backend.op("grad_reverse_branch_backward")(task, adv, lam, None),
        reference.grad_reverse_branch_backward(task, adv, lam),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lam_tensor_overrides_lam(backend, dtype):
    gen = torch.Generator().manual_seed(2)
    task = torch.randn(1029, dtype=dtype, generator=gen).to(backend.device)
    adv = torch.randn(1029, dtype=dtype, generator=gen).to(backend.device)
    for lam_t in (torch.tensor(0.25, dtype=torch.float64), torch.tensor([0.25], dtype=torch.float32)):
        for where in {torch.device("cpu"), backend.device}:
            lt = lam_t.to(where)
            got = backend.op("grad_reverse_backward")(adv, 99.0, lt)
            assert_close(got, reference.grad_reverse_backward(adv.double(), 0.25), dtype)
            got = backend.op("grad_reverse_branch_backward")(task, adv, 99.0, lt)
            assert_close(got, reference.grad_reverse_branch_backward(task.double(), adv.double(), 0.25), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_cpu(dtype):
    gen = torch.Generator().manual_seed(3)
    task = torch.randn(1000, generator=gen).to(dtype)
    adv = torch.randn(1000, generator=gen).to(dtype)
    got = torch.ops.tlkernels.grad_reverse_branch_backward(task, adv, 0.5, None)
    assert got.dtype == dtype
    assert_close(got, reference.grad_reverse_branch_backward(task.double(), adv.double(), 0.5), dtype)


@pytest.mark.skipif("tlkernels_emu" not in BACKEND_NAMESPACES, reason="emulator backend not built")
def test_emu_refuses_half_with_a_clear_message():
    x = torch.randn(8).half()
    with pytest.raises(ValueError, match="float32 and float64"):
        torch.ops.tlkernels_emu.grad_reverse_backward(x, 1.0, None)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_argument(backend):
    x = torch.randn(5, device=backend.device)
    op, branch = backend.op("grad_reverse_backward"), backend.op("grad_reverse_branch_backward")
    with pytest.raises(ValueError, match="grad must be a floating tensor"):
        op(torch.arange(5, device=backend.device), 1.0, None)
    with pytest.raises(ValueError, match="lam must be finite"):
        op(x, float("nan"), None)
    with pytest.raises(ValueError, match="lam must be finite"):
        op(x, float("inf"), None)
    with pytest.raises(ValueError, match="lam must be finite"):
        op(x, 1.0, torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="lam must be a float or a tensor with one element"):
        op(x, 1.0, torch.ones(2, device=backend.device))
    with pytest.raises(ValueError, match="lam must be a floating tensor"):
        op(x, 1.0, torch.tensor(1))
    with pytest.raises(ValueError, match="grad_task must have the shape of grad_adv"):
        branch(torch.randn(4, device=backend.device), x, 1.0, None)
    with pytest.raises(ValueError, match="grad_task must have the dtype of grad_adv"):
        branch(x.double(), x, 1.0, None)
    # Mixed devices at the op level need a second real device (a meta tensor would route the
    # call to the fake kernel); the Python API's device check is tested below, the C++ check in
    # test_mixed_devices_cuda.


def test_python_api_checks_arguments():
    x = torch.randn(5, requires_grad=True)
    with pytest.raises(ValueError, match="x must be a floating tensor"):
        tlkernels.grad_reverse(torch.arange(3), 1.0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        tlkernels.grad_reverse([1.0, 2.0], 1.0)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="lam must be finite"):
            tlkernels.grad_reverse(x, bad)
        with pytest.raises(ValueError, match="lam must be finite"):
            tlkernels.grad_reverse_branch(x, bad)
    with pytest.raises(ValueError, match="one element"):
        tlkernels.grad_reverse(x, torch.ones(3))
    with pytest.raises(ValueError, match="lam must be on the device of x"):
        tlkernels.grad_reverse(x, torch.tensor(1.0, device="meta"))
    with pytest.raises(TypeError, match="lam must be a float"):
        tlkernels.grad_reverse(x, "1.0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: a CPU tensor beside a CUDA tensor")
def test_mixed_devices_cuda():
    x = torch.randn(5, device="cuda")
    with pytest.raises(ValueError, match="grad_task must be on the device of grad_adv"):
        torch.ops.tlkernels.grad_reverse_branch_backward(torch.randn(5), x, 1.0, None)
    with pytest.raises(ValueError, match="lam must be on the device of x"):
        tlkernels.grad_reverse(x, torch.tensor(1.0, device="cuda:1" if torch.cuda.device_count() > 1 else "meta"))


# ----------------------------------------------------------------------------- autograd
def test_forward_is_a_view_without_copy():
    x = torch.randn(4, 5, requires_grad=True)
    y = tlkernels.grad_reverse(x, 0.5)
    a, b = tlkernels.grad_reverse_branch(x, 0.5)
    for t in (y, a, b):
        assert t.data_ptr() == x.data_ptr() and t.shape == x.shape


@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0, torch.tensor(0.75, dtype=torch.float64)], ids=str)
def test_gradients_match_plain_autograd(lam):
    gen = torch.Generator().manual_seed(4)
    w_task = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    w_adv = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    x0 = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    lam_f = float(lam)

    x = x0.clone().requires_grad_()
    a, b = tlkernels.grad_reverse_branch(x, lam)
    ((a * w_task).sum() + (b * w_adv).sum()).backward()
    x_ref = x0.clone().requires_grad_()
    a, b = reference.grad_reverse_branch(x_ref, lam_f)
    ((a * w_task).sum() + (b * w_adv).sum()).backward()
    assert torch.equal(x.grad, x_ref.grad)

    x = x0.clone().requires_grad_()
    (tlkernels.grad_reverse(x, lam) * w_adv).sum().backward()
    assert torch.equal(x.grad, -lam_f * w_adv)


def test_branch_with_one_unused_output():
    x = torch.randn(7, dtype=torch.float64, requires_grad=True)
    a, b = tlkernels.grad_reverse_branch(x, 0.5)
    (3 * b).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, -1.5))
    x.grad = None
    a, b = tlkernels.grad_reverse_branch(x, 0.5)
    (3 * a).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 3.0))


@pytest.mark.parametrize("namespace", BACKEND_NAMESPACES)
def test_gradcheck_of_the_backward_ops(namespace):
    """The reversal layer's own gradient is wrong on purpose (gradcheck would flag it); its
    backward ops are ordinary functions whose registered autograd must be exact, so that double
    backward through a reversal layer is right."""
    ops = getattr(torch.ops, namespace)
    g = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    h = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    lam_t = torch.tensor(0.3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ops.grad_reverse_backward(t, 0.7, None), (g,))
    assert torch.autograd.gradcheck(lambda t: ops.grad_reverse_backward(t, 0.7, lam_t), (g,))
    assert torch.autograd.gradgradcheck(lambda t: ops.grad_reverse_backward(t, 0.7, None) ** 2, (g,))
    assert torch.autograd.gradcheck(lambda a, b: ops.grad_reverse_branch_backward(a, b, 0.7, None), (g, h))
    assert torch.autograd.gradgradcheck(lambda a, b: ops.grad_reverse_branch_backward(a, b, 0.7, lam_t) ** 2, (g, h))


def test_double_backward_matches_plain_autograd():
    """Second derivatives through the layer equal those of the textbook autograd layer."""
    x0 = torch.randn(5, dtype=torch.float64)
    results = []
    for layer in (tlkernels.grad_reverse, reference.grad_reverse):
        x = x0.clone().requires_grad_()
        (gx,) = torch.autograd.grad((layer(x, 0.5) ** 3).sum(), x, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.sum(), x)
        results.append((gx.detach(), ggx))
    torch.testing.assert_close(results[0][0], -0.5 * 3 * x0**2)
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


@pytest.mark.parametrize("namespace", BACKEND_NAMESPACES)
def test_opcheck(namespace):
    ops = getattr(torch.ops, namespace)
    gen = torch.Generator().manual_seed(5)
    for dtype in (torch.float32, torch.float64):
        g = torch.randn(3, 17, dtype=dtype, generator=gen, requires_grad=True)
        h = torch.randn(3, 17, dtype=dtype, generator=gen, requires_grad=True)
        torch.library.opcheck(ops.grad_reverse_backward, (g, 0.5, None))
        torch.library.opcheck(ops.grad_reverse_backward, (g, 0.5, torch.tensor(0.25, dtype=dtype)))
        torch.library.opcheck(ops.grad_reverse_branch_backward, (g, h, 0.5, None))


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    feat, head, dom = torch.nn.Linear(5, 8), torch.nn.Linear(8, 3), torch.nn.Linear(8, 2)
    grl = tlkernels.GradientReversal(lam_max=1.0)

    def step(x, progress):
        f = torch.relu(feat(x))
        f_task, f_adv = grl.fork(f, progress)
        return head(f_task).logsumexp(1).sum() + dom(f_adv).logsumexp(1).sum()

    x = torch.randn(4, 5)
    progress = torch.tensor(0.3)
    eager = torch.autograd.grad(step(x, progress), list(feat.parameters()))
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(x, progress), list(feat.parameters()))
    for e, g in zip(eager, got):
        torch.testing.assert_close(g, e)


# ----------------------------------------------------------------------------- the module
def test_dann_schedule():
    assert tlkernels.dann_lambda(0.0) == 0.0
    end = 2.0 / (1.0 + math.exp(-10.0)) - 1.0
    assert tlkernels.dann_lambda(1.0, lam_max=0.5) == pytest.approx(0.5 * end, rel=1e-15)
    assert tlkernels.dann_lambda(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(end)
    with pytest.raises(ValueError, match="progress"):
        tlkernels.dann_lambda(float("nan"))
    with pytest.raises(ValueError, match="progress"):
        tlkernels.dann_lambda(-0.1)


def test_gradient_reversal_module_uses_explicit_progress_only():
    grl = tlkernels.GradientReversal(lam_max=2.0, gamma=10.0, progress=0.0)
    x = torch.ones(3, requires_grad=True)
    for _ in range(3):  # calls do not advance the schedule
        grl(x).sum().backward()
        assert torch.equal(x.grad, torch.zeros(3))
        x.grad = None
    grl.set_progress(0.5)
    lam = tlkernels.dann_lambda(0.5, 2.0, 10.0)
    grl(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -lam))
    x.grad = None
    grl(x, progress=1.0).sum().backward()  # explicit progress wins for this call
    torch.testing.assert_close(x.grad, torch.full((3,), -tlkernels.dann_lambda(1.0, 2.0, 10.0)))
    assert grl.lam == pytest.approx(lam)
    with pytest.raises(ValueError, match="lam_max"):
        tlkernels.GradientReversal(lam_max=float("nan"))
