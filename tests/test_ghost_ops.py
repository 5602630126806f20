"""Per-sample gradient product ops (ghost_dot, ghost_gram, ghost_norm, clip_update_) on every
backend against the materialising reference, their argument checks, opcheck and gradcheck.

Tolerance: a reduction of n terms in a dtype with machine epsilon eps has a first-order error
bound n·eps·Σ|terms|. The Σ|terms| of each op is the same op on |A|, |D|, |G| (reference, in
float64), and n the sum of the reduction lengths of the stages (I, O, T or T·T'). The per-dtype
tolerance of conftest is added for the final rounding to the output dtype.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TOLERANCES
from tlkernels import ops, reference
from tlkernels.ops import BACKEND_NAMESPACES

COMPUTE_EPS = {
    torch.float64: torch.finfo(torch.float64).eps,
    torch.float32: torch.finfo(torch.float32).eps,
    torch.float16: torch.finfo(torch.float32).eps,
    torch.bfloat16: torch.finfo(torch.float32).eps,
}


def assert_within_bound(got, ref, absref, n_terms, dtype):
    """|got - ref| <= rtol·|ref| + atol + n·eps·absref, elementwise, and no NaN."""
    got = got.to(torch.float64).cpu()
    assert not torch.isnan(got).any(), "NaN in the output (an element was not written?)"
    tol = TOLERANCES[dtype]
    bound = tol["rtol"] * ref.abs() + tol["atol"] + n_terms * COMPUTE_EPS[dtype] * absref
    err = (got - ref).abs()
    assert (err <= bound).all(), f"max error {err.max().item():.3e}, worst excess {(err - bound).max().item():.3e}"


def make(shape, dtype, device, layout, gen):
    """A tensor of `shape` with values from `gen`, contiguous or in a non-contiguous layout."""
    if layout == "contiguous":
        return torch.randn(shape, dtype=torch.float64, generator=gen).to(dtype).to(device)
    if layout == "transposed":
        base = torch.randn(tuple(reversed(shape)), dtype=torch.float64, generator=gen).to(dtype).to(device)
        return base.permute(*reversed(range(len(shape))))
    if layout == "strided":
        big = torch.randn(tuple(shape[:-1]) + (2 * shape[-1] + 1,), dtype=torch.float64, generator=gen)
        return big.to(dtype).to(device)[..., 1::2]
    raise AssertionError(layout)


# (B, T, I, O): B = 1, primes, T = 1 and T > 1 (also above the device tiles of 64), I and O not
# multiples of the tiles, empty B / T / I.
DOT_SHAPES = [
    (1, 1, 1, 1),
    (7, 1, 13, 5),
    (3, 5, 17, 11),
    (2, 67, 9, 70),
    (5, 3, 65, 66),
    (67, 1, 3, 2),
    (0, 4, 3, 2),
    (4, 0, 3, 2),
    (3, 2, 0, 4),
]
LAYOUTS = ["contiguous", "transposed", "strided"]


def _seed(*key):
    return torch.Generator().manual_seed(hash(key) % 2**31)


# ------------------------------------------------------------------------------- ghost_dot
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", DOT_SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("V", [None, 3])
def test_ghost_dot_matches_reference(backend, dtype, shape, layout, V):
    B, T, I, O = shape
    gen = _seed("dot", shape, layout, V)
    A = make((B, T, I), dtype, backend.device, layout, gen)
    D = make((B, T, O), dtype, backend.device, layout, gen)
    G = make((O, I) if V is None else (V, O, I), dtype, backend.device, layout, gen)
    got = backend.op("ghost_dot")(A, D, G)
    assert got.shape == ((B,) if V is None else (B, V)) and got.dtype == dtype
    assert got.device.type == backend.device.type
    A64, D64, G64 = (x.double().cpu() for x in (A, D, G))
    ref = reference.ghost_dot(A64, D64, G64)
    absref = reference.ghost_dot(A64.abs(), D64.abs(), G64.abs())
    assert_within_bound(got, ref, absref, I + O + T, dtype)


def test_ghost_dot_blocks_walking_several_output_tiles(backend):
    """Many targets (V = 130) make enough blocks that the device kernel splits O = 130 (3 tiles of
    64) in 2, so one block walks tiles 0 and 2: the loop the small shapes above never take."""
    gen = _seed("split-loop")
    A = torch.randn(5, 3, 3, dtype=torch.float64, generator=gen).to(backend.device)
    D = torch.randn(5, 3, 130, dtype=torch.float64, generator=gen).to(backend.device)
    G = torch.randn(130, 130, 3, dtype=torch.float64, generator=gen).to(backend.device)
    got = backend.op("ghost_dot")(A, D, G)
    A64, D64, G64 = A.cpu(), D.cpu(), G.cpu()
    assert_within_bound(
        got,
        reference.ghost_dot(A64, D64, G64),
        reference.ghost_dot(A64.abs(), D64.abs(), G64.abs()),
        3 + 130 + 3,
        torch.float64,
    )


# ------------------------------------------------------------------------------ ghost_gram
GRAM_SHAPES = [  # (B1, T, B2, T', I, O)
    (1, 1, 1, 1, 1, 1),
    (7, 1, 5, 1, 13, 3),
    (3, 4, 2, 7, 11, 17),
    (2, 66, 1, 65, 5, 3),
    (3, 1, 2, 3, 70, 67),
    (40, 3, 23, 5, 6, 7),
    (0, 3, 4, 2, 3, 5),
    (3, 2, 0, 2, 3, 5),
    (2, 0, 3, 2, 4, 5),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", GRAM_SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_ghost_gram_matches_reference(backend, dtype, shape, layout):
    B1, T1, B2, T2, I, O = shape
    gen = _seed("gram", shape, layout)
    A1, D1 = (
        make((B1, T1, I), dtype, backend.device, layout, gen),
        make((B1, T1, O), dtype, backend.device, layout, gen),
    )
    A2, D2 = (
        make((B2, T2, I), dtype, backend.device, layout, gen),
        make((B2, T2, O), dtype, backend.device, layout, gen),
    )
    got = backend.op("ghost_gram")(A1, D1, A2, D2)
    assert got.shape == (B1, B2) and got.dtype == dtype
    xs = [x.double().cpu() for x in (A1, D1, A2, D2)]
    ref = reference.ghost_gram(*xs)
    absref = reference.ghost_gram(*(x.abs() for x in xs))
    assert_within_bound(got, ref, absref, I + O + T1 * T2, dtype)


# ------------------------------------------------------------------------------ ghost_norm
# T(I+O) <= I·O: from the T×T tiles; T(I+O) > I·O: one Q_i at a time (both paths covered).
# (2, 65, 140, 140): T > 64 from the tiles; (70, 2, 9, 8): samples packed 32 per tile, 3 tiles.
NORM_SHAPES = [
    (1, 1, 1, 1),
    (7, 1, 13, 5),
    (5, 3, 17, 11),
    (3, 41, 5, 6),
    (2, 67, 70, 9),
    (2, 7, 65, 66),
    (2, 65, 140, 140),
    (70, 2, 9, 8),
    (0, 3, 4, 5),
    (3, 0, 4, 5),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_ghost_norm_matches_reference(backend, dtype, shape, layout):
    B, T, I, O = shape
    gen = _seed("norm", shape, layout)
    A, D = make((B, T, I), dtype, backend.device, layout, gen), make((B, T, O), dtype, backend.device, layout, gen)
    got = backend.op("ghost_norm")(A, D)
    assert got.shape == (B,) and got.dtype == dtype
    A64, D64 = A.double().cpu(), D.double().cpu()
    ref = reference.ghost_norm(A64, D64)
    absref = reference.ghost_norm(A64.abs(), D64.abs())
    assert_within_bound(got, ref, absref, I + O + T * T, dtype)


def test_norm_is_the_diagonal_of_the_gram(backend):
    gen = _seed("diag")
    for B, T, I, O in [(4, 1, 6, 5), (3, 9, 12, 10), (2, 30, 3, 4)]:
        A = torch.randn(B, T, I, dtype=torch.float64, generator=gen).to(backend.device)
        D = torch.randn(B, T, O, dtype=torch.float64, generator=gen).to(backend.device)
        torch.testing.assert_close(
            backend.op("ghost_norm")(A, D), torch.diagonal(backend.op("ghost_gram")(A, D, A, D)), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_accumulate_in_float32(backend, dtype):
    gen = _seed("half", str(dtype))
    A = torch.randn(6, 3, 33, generator=gen).to(dtype).to(backend.device)
    D = torch.randn(6, 3, 17, generator=gen).to(dtype).to(backend.device)
    G = torch.randn(17, 33, generator=gen).to(dtype).to(backend.device)
    A64, D64, G64 = A.double().cpu(), D.double().cpu(), G.double().cpu()
    got = backend.op("ghost_dot")(A, D, G)
    assert got.dtype == dtype
    assert_within_bound(
        got,
        reference.ghost_dot(A64, D64, G64),
        reference.ghost_dot(A64.abs(), D64.abs(), G64.abs()),
        33 + 17 + 3,
        dtype,
    )
    got = backend.op("ghost_gram")(A, D, A[:4], D[:4])
    assert got.dtype == dtype
    assert_within_bound(
        got,
        reference.ghost_gram(A64, D64, A64[:4], D64[:4]),
        reference.ghost_gram(A64.abs(), D64.abs(), A64[:4].abs(), D64[:4].abs()),
        33 + 17 + 9,
        dtype,
    )
    got = backend.op("ghost_norm")(A, D)
    assert got.dtype == dtype
    assert_within_bound(
        got, reference.ghost_norm(A64, D64), reference.ghost_norm(A64.abs(), D64.abs()), 33 + 17 + 9, dtype
    )


def test_results_do_not_depend_on_the_thread_count():
    gen = _seed("threads")
    A = torch.randn(37, 9, 50, generator=gen)
    D = torch.randn(37, 9, 40, generator=gen)
    G = torch.randn(40, 50, generator=gen)
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            runs.append((ops.ghost_dot(A, D, G), ops.ghost_gram(A, D, A[:5], D[:5]), ops.ghost_norm(A, D)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------- clip_update_
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_update_matches_reference(backend, dtype):
    gen = _seed("clip", str(dtype))
    N = 53
    alpha0 = torch.rand(N, dtype=torch.float64, generator=gen).to(dtype)
    alpha0[:3] = torch.tensor([0.0, 1.0, 0.5], dtype=dtype)
    # duplicates (with mixed signs), both clip ends, an index hit once, and the last slot
    index = torch.tensor([4, 0, 1, 4, 52, 7, 7, 7, 1, 30, 2], dtype=torch.int64)
    s = torch.randn(index.numel(), dtype=torch.float64, generator=gen) * 3
    s[1], s[2] = -1.0, 1.0
    for lr in (0.4, -0.7, 0.0):
        got = alpha0.clone().to(backend.device)
        assert backend.op("clip_update_")(got, index.to(backend.device), s.to(dtype).to(backend.device), lr) is None
        want = reference.clip_update_(alpha0.double(), index, s.to(dtype).double(), lr)
        assert_within_bound(got, want, torch.ones(N, dtype=torch.float64), 4, dtype)
        assert ((got >= 0) & (got <= 1)).all()
        untouched = torch.ones(N, dtype=torch.bool)
        untouched[index] = False
        assert torch.equal(got.cpu()[untouched], alpha0[untouched])


def test_clip_update_duplicates_are_summed_before_the_clip(backend):
    alpha = torch.full((3,), 0.5, dtype=torch.float64, device=backend.device)
    index = torch.tensor([1, 1, 1], device=backend.device)
    s = torch.tensor([2.0, -2.0, 0.25], dtype=torch.float64, device=backend.device)
    backend.op("clip_update_")(alpha, index, s, 1.0)
    # summed first: 0.5 + 0.25; clipping after each term would give clip(clip(1.0 + ...)) = 0.25
    assert alpha.cpu().tolist() == [0.5, 0.75, 0.5]


def test_clip_update_strided_alpha_mixed_s_dtype_and_empty(backend):
    base = torch.full((10,), 0.5, dtype=torch.float32, device=backend.device)
    alpha = base[::2]  # (5,), stride 2
    backend.op("clip_update_")(
        alpha,
        torch.tensor([0, 4], device=backend.device),
        torch.tensor([0.25, -1.0], dtype=torch.float64, device=backend.device),
        1.0,
    )
    assert base.cpu().tolist() == [0.75, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.5]
    backend.op("clip_update_")(
        alpha, torch.empty(0, dtype=torch.int64, device=backend.device), torch.empty(0, device=backend.device), 1.0
    )
    assert base.cpu().tolist() == [0.75, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.5]


def test_clip_update_nan_propagates(backend):
    alpha = torch.full((2,), 0.5, device=backend.device)
    backend.op("clip_update_")(
        alpha, torch.tensor([1], device=backend.device), torch.tensor([float("nan")], device=backend.device), 1.0
    )
    assert alpha[0].item() == 0.5 and torch.isnan(alpha[1])


# ------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_name_the_argument(backend):
    dev = backend.device
    A, D, G = torch.randn(3, 2, 5, device=dev), torch.randn(3, 2, 4, device=dev), torch.randn(4, 5, device=dev)
    dot, gram, norm, clip = (backend.op(n) for n in ("ghost_dot", "ghost_gram", "ghost_norm", "clip_update_"))
    with pytest.raises(ValueError, match=r"A must have shape \(B, T, I\)"):
        dot(A[:, 0], D, G)
    with pytest.raises(ValueError, match="A must be a floating tensor"):
        dot(A.long(), D, G)
    with pytest.raises(ValueError, match="D must have shape"):
        dot(A, D[:2], G)
    with pytest.raises(ValueError, match="D must have the dtype of A"):
        dot(A, D.double(), G)
    with pytest.raises(ValueError, match="G must have shape"):
        dot(A, D, G.T)
    with pytest.raises(ValueError, match="G must have shape"):
        dot(A, D, G[None, None])
    with pytest.raises(ValueError, match="G must have the dtype of A"):
        dot(A, D, G.double())
    with pytest.raises(ValueError, match="D2 must have shape"):
        gram(A, D, A, D[:, :, :3])
    with pytest.raises(ValueError, match="A2 must have shape"):
        gram(A, D, A[:, :, :3], D)
    with pytest.raises(ValueError, match="A2 must have the dtype of A1"):
        gram(A, D, A.double(), D.double())
    with pytest.raises(ValueError, match="D1 must have shape"):
        gram(A, D[:, :1], A, D)
    with pytest.raises(ValueError, match="D must have shape"):
        norm(A, D[:, :1])
    alpha = torch.rand(5, device=dev)
    idx = torch.tensor([0, 4], device=dev)
    s = torch.ones(2, device=dev)
    with pytest.raises(IndexError, match="index must hold values in"):
        clip(alpha, torch.tensor([0, 5], device=dev), s, 1.0)
    with pytest.raises(IndexError, match="index must hold values in"):
        clip(alpha, torch.tensor([-1, 0], device=dev), s, 1.0)
    with pytest.raises(ValueError, match="index must be an int64 tensor"):
        clip(alpha, idx.int(), s, 1.0)
    with pytest.raises(ValueError, match="s must have shape"):
        clip(alpha, idx, torch.ones(3, device=dev), 1.0)
    with pytest.raises(ValueError, match="alpha must be a float32 or float64 tensor"):
        clip(alpha.half(), idx, s, 1.0)
    with pytest.raises(ValueError, match="alpha must have shape"):
        clip(alpha[None], idx, s, 1.0)
    with pytest.raises(ValueError, match="lr must be finite"):
        clip(alpha, idx, s, float("nan"))


def test_python_wrappers_accept_2d_inputs():
    gen = _seed("2d")
    A, D = torch.randn(5, 7, dtype=torch.float64, generator=gen), torch.randn(5, 3, dtype=torch.float64, generator=gen)
    G = torch.randn(3, 7, dtype=torch.float64, generator=gen)
    A3, D3 = A[:, None], D[:, None]
    torch.testing.assert_close(ops.ghost_dot(A, D, G), reference.ghost_dot(A3, D3, G))
    torch.testing.assert_close(ops.ghost_gram(A, D, A, D), reference.ghost_gram(A3, D3, A3, D3))
    torch.testing.assert_close(ops.ghost_norm(A, D), reference.ghost_norm(A3, D3))
    with pytest.raises(TypeError, match="A must be a torch.Tensor"):
        ops.ghost_dot([1.0], D, G)
    alpha = torch.full((4,), 0.5)
    assert ops.clip_update_(alpha, torch.tensor([2]), torch.tensor([0.25]), 1.0) is alpha
    assert alpha.tolist() == [0.5, 0.5, 0.75, 0.5]


# --------------------------------------------------------------------- opcheck / gradcheck
@pytest.mark.parametrize("namespace", BACKEND_NAMESPACES)
def test_opcheck(namespace):
    o = getattr(torch.ops, namespace)
    gen = _seed("opcheck")
    for dtype in (torch.float32, torch.float64):
        r = lambda *s: torch.randn(*s, dtype=dtype, generator=gen).requires_grad_()  # noqa: E731
        A, D, G, G3 = r(3, 2, 5), r(3, 2, 4), r(4, 5), r(2, 4, 5)
        torch.library.opcheck(o.ghost_dot, (A, D, G))
        torch.library.opcheck(o.ghost_dot, (A, D, G3))
        torch.library.opcheck(o.ghost_gram, (A, D, r(2, 3, 5), r(2, 3, 4)))
        torch.library.opcheck(o.ghost_norm, (A, D))
        torch.library.opcheck(o.ghost_norm, (r(2, 9, 2), r(2, 9, 3)))  # the materialising path
        alpha = torch.rand(6, dtype=dtype, generator=gen)
        torch.library.opcheck(o.clip_update_, (alpha, torch.tensor([1, 5, 1]), torch.randn(3, dtype=dtype), 0.5))


@pytest.mark.parametrize("namespace", BACKEND_NAMESPACES)
def test_gradcheck(namespace):
    o = getattr(torch.ops, namespace)
    gen = _seed("gradcheck")
    r = lambda *s: torch.randn(*s, dtype=torch.float64, generator=gen).requires_grad_()  # noqa: E731
    A, D = r(3, 2, 4), r(3, 2, 3)
    assert torch.autograd.gradcheck(o.ghost_dot, (A, D, r(3, 4)))
    assert torch.autograd.gradcheck(o.ghost_dot, (A, D, r(2, 3, 4)))
    assert torch.autograd.gradgradcheck(o.ghost_dot, (A, D, r(3, 4)))
    assert torch.autograd.gradcheck(o.ghost_norm, (A, D))  # T×T path
    assert torch.autograd.gradcheck(o.ghost_norm, (r(2, 5, 2), r(2, 5, 1)))  # Q path
    assert torch.autograd.gradcheck(o.ghost_gram, (A, D, r(2, 3, 4), r(2, 3, 3)))


def test_torch_compile_fullgraph():
    def f(A, D, G, alpha, index):
        s = ops.ghost_dot(A, D, G) + ops.ghost_norm(A, D)
        return ops.clip_update_(alpha, index, s, 0.1)

    gen = _seed("compile")
    A, D, G = torch.randn(4, 3, 5, generator=gen), torch.randn(4, 3, 2, generator=gen), torch.randn(2, 5, generator=gen)
    index = torch.tensor([0, 2, 2, 5])
    a_eager, a_comp = torch.full((6,), 0.5), torch.full((6,), 0.5)
    f(A, D, G, a_eager, index)
    torch.compile(f, fullgraph=True, backend="aot_eager")(A, D, G, a_comp, index)
    torch.testing.assert_close(a_comp, a_eager)
