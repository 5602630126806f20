"""What the GPU would pay for an op, counted by the SIMT emulator.

The emulator (``torch.ops.tlkernels_emu``) runs the CUDA device code on CPU tensors with the
launch plans the GPU gets. While :class:`profile` is active it counts, per kernel launch, what
the device code reports through ``kernels/simt.cuh``'s accessors (csrc/emu/counters.h):

* global memory: warp-level requests and the 32-byte sectors they touch (ideal: the distinct
  bytes / 32; more sectors than that is uncoalesced or misaligned access);
* shared memory: wavefronts per request (the most distinct 4-byte words in one of the 32 banks)
  against the ideal ``ceil(words / 32)``: the difference is bank conflicts;
* branches marked ``TLK_BRANCH``: warp-level branches and the divergent ones;
* FLOPs the threads report (executed, padding included).

Example::

    with tlkernels.emu_profile.profile() as prof:
        torch.ops.tlkernels_emu.ghost_dot(A, D, G)
    print(tlkernels.emu_profile.format_table(prof.launches))

or ``tlkernels emu-profile ghost_dot --shape B=8,T=16,I=256,O=256``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = [
    "OPS",
    "AccessCounters",
    "LaunchCounters",
    "add_parser",
    "format_table",
    "profile",
    "profile_op",
]

KINDS = ("global_load", "global_store", "shared_load", "shared_store", "branch")


@dataclass(frozen=True)
class AccessCounters:
    """Totals of one kind of access (one source site or a whole launch).

    ``units`` is sectors (global), wavefronts (shared) or divergent branches (branch); ``ideal``
    is the sectors / wavefronts perfectly packed accesses would need (0 for branches).
    """

    requests: int = 0
    lanes: int = 0
    bytes: int = 0
    units: int = 0
    ideal: int = 0

    @property
    def per_request(self) -> float:
        """Sectors (or wavefronts) per warp-level request; 0.0 without requests."""
        return self.units / self.requests if self.requests else 0.0

    @property
    def excess(self) -> int:
        """Sectors beyond the ideal (global) or bank conflicts (shared): ``units - ideal``."""
        return self.units - self.ideal


@dataclass(frozen=True)
class LaunchCounters:
    """Everything counted for one kernel launch (``kinds`` keyed by :data:`KINDS`)."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dynamic_shared_bytes: int
    static_shared_bytes: int
    blocks: int
    threads: int
    flops: int
    kinds: dict[str, AccessCounters]
    sites: list[tuple[str, str, AccessCounters]] = field(default_factory=list)

    @property
    def short_name(self) -> str:
        """The kernel's name without namespaces and argument list, e.g. ``ghost_dot_rows_kernel<float>``."""
        name = re.sub(r"\(.*\)$", "", self.kernel)
        name = re.sub(r"^void ", "", name)  # the return type of a kernel
        return name.replace("tlk::kernels::", "")

    @property
    def global_bytes(self) -> int:
        """Bytes moved between the SMs and L2 / DRAM: 32 bytes per sector, loads and stores."""
        return 32 * (self.kinds["global_load"].units + self.kinds["global_store"].units)

    @property
    def bank_conflicts(self) -> int:
        """Extra shared-memory wavefronts over the conflict-free ideal, loads and stores."""
        return self.kinds["shared_load"].excess + self.kinds["shared_store"].excess

    @property
    def divergent_branches(self) -> int:
        """Warp-level ``TLK_BRANCH`` branches whose lanes disagreed."""
        return self.kinds["branch"].units

    def site(self, pattern: str, kind: str) -> AccessCounters:
        """The sum over source sites of ``kind`` whose ``file:line:column`` contains ``pattern``.

        Raises ``KeyError`` naming the pattern when no site matches.
        """
        found = [c for s, k, c in self.sites if k == kind and pattern in s]
        if not found:
            raise KeyError(f"no {kind} site matching {pattern!r} in {self.short_name}")
        return AccessCounters(
            *(sum(getattr(c, f) for c in found) for f in ("requests", "lanes", "bytes", "units", "ideal"))
        )


def _parse(raw: str) -> list[LaunchCounters]:
    out = []
    for d in json.loads(raw):
        out.append(
            LaunchCounters(
                kernel=d["kernel"],
                grid=tuple(d["grid"]),
                block=tuple(d["block"]),
                dynamic_shared_bytes=d["dynamic_shared_bytes"],
                static_shared_bytes=d["static_shared_bytes"],
                blocks=d["blocks"],
                threads=d["threads"],
                flops=d["flops"],
                kinds={k: AccessCounters(**v) for k, v in d["kinds"].items()},
                sites=[(s["site"], s["kind"], AccessCounters(**s["counters"])) for s in d["sites"]],
            )
        )
    return out


def _emu_ops():
    from . import _C  # noqa: F401  (registers torch.ops.tlkernels_emu)

    if not hasattr(torch.ops.tlkernels_emu, "_profile_start"):
        raise RuntimeError("this build of tlkernels has no emulator counters (rebuild with TLK_EMU=ON)")
    return torch.ops.tlkernels_emu


class profile:
    """Context manager counting every emulator launch inside it; ``launches`` after exit.

    Profiles do not nest (a second one raises ``RuntimeError``). Counting slows launches down.
    """

    def __init__(self) -> None:
        self.launches: list[LaunchCounters] = []

    def __enter__(self) -> profile:
        _emu_ops()._profile_start()
        return self

    def __exit__(self, *exc) -> None:
        self.launches = _parse(_emu_ops()._profile_stop())


# op -> (shape names with defaults, builder of the op's arguments from the shapes and dtype)
def _ghost_inputs(s, dtype, g):
    A = torch.randn(s["B"], s["T"], s["I"], dtype=dtype, generator=g)
    D = torch.randn(s["B"], s["T"], s["O"], dtype=dtype, generator=g)
    return A, D


OPS: dict[str, tuple[dict[str, int], Callable]] = {
    "ghost_dot": (
        {"B": 8, "T": 16, "I": 256, "O": 256, "V": 1},
        lambda s, dt, g: (
            *_ghost_inputs(s, dt, g),
            torch.randn(s["V"], s["O"], s["I"], dtype=dt, generator=g),
        ),
    ),
    "ghost_gram": (
        {"B": 8, "T": 16, "I": 256, "O": 256},
        lambda s, dt, g: (*_ghost_inputs(s, dt, g), *_ghost_inputs(s, dt, g)),
    ),
    "ghost_norm": ({"B": 8, "T": 16, "I": 256, "O": 256}, _ghost_inputs),
    "clip_update_": (
        {"N": 1024, "B": 256},
        lambda s, dt, g: (
            torch.rand(s["N"], dtype=dt, generator=g),
            torch.randint(0, s["N"], (s["B"],), generator=g),
            torch.randn(s["B"], dtype=dt, generator=g),
            0.1,
        ),
    ),
    "kmeans_assign": (
        {"N": 1024, "K": 64, "D": 32},
        lambda s, dt, g: (
            torch.randn(s["N"], s["D"], dtype=dt, generator=g),
            torch.randn(s["K"], s["D"], dtype=dt, generator=g),
        ),
    ),
    "kmeans_update": (
        {"N": 1024, "K": 64, "D": 32},
        lambda s, dt, g: (
            torch.randn(s["N"], s["D"], dtype=dt, generator=g),
            torch.randint(0, s["K"], (s["N"],), generator=g),
            s["K"],
        ),
    ),
    "grad_reverse_backward": (
        {"N": 1 << 16},
        lambda s, dt, g: (torch.randn(s["N"], dtype=dt, generator=g), 0.5),
    ),
}


def profile_op(
    op: str,
    shapes: dict[str, int] | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
):
    """Runs ``torch.ops.tlkernels_emu.<op>`` once on random inputs and returns its launches' counters.

    ``shapes`` overrides the defaults of :data:`OPS` (e.g. ghost_dot: B, T, I, O, V; kmeans_assign:
    N, K, D); unknown names raise ``ValueError`` listing the valid ones. Returns a list of
    :class:`LaunchCounters`, one per launch, in launch order.
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {sorted(OPS)}, got {op!r}")
    defaults, build = OPS[op]
    s = dict(defaults)
    for k, v in (shapes or {}).items():
        if k not in defaults:
            raise ValueError(f"shape name {k!r} is not one of {op}'s: {sorted(defaults)}")
        if int(v) < 0:
            raise ValueError(f"shape {k} must be >= 0, got {v}")
        s[k] = int(v)
    g = torch.Generator().manual_seed(seed)
    args = build(s, dtype, g)
    fn = getattr(_emu_ops(), op)
    with profile() as prof:
        fn(*args)
    return prof.launches


def format_table(launches: list[LaunchCounters]) -> str:
    """One line per launch: grid, FLOPs, global sectors per request (loads / stores, ideal in
    brackets), bytes, shared wavefronts per request and bank conflicts, divergent branches."""
    head = (
        f"{'kernel':38s} {'grid':>14s} {'MFLOP':>9s} {'ld sect/req':>14s} {'st sect/req':>14s} "
        f"{'MB global':>10s} {'sh wave/req':>12s} {'conflicts':>10s} {'div/branches':>13s}"
    )
    lines = [head]
    for L in launches:
        gl, gs = L.kinds["global_load"], L.kinds["global_store"]
        sl, ss, br = L.kinds["shared_load"], L.kinds["shared_store"], L.kinds["branch"]

        def ratio(c):
            ideal = c.ideal / c.requests if c.requests else 0.0
            return f"{c.per_request:5.2f} ({ideal:4.2f})"

        sh = AccessCounters(sl.requests + ss.requests, 0, 0, sl.units + ss.units, sl.ideal + ss.ideal)
        lines.append(
            f"{L.short_name[:38]:38s} {'x'.join(map(str, L.grid)):>14s} {L.flops / 1e6:9.3f} {ratio(gl):>14s} "
            f"{ratio(gs):>14s} {L.global_bytes / 1e6:10.3f} {sh.per_request:12.2f} {L.bank_conflicts:10d} "
            f"{br.units:6d}/{br.requests:<6d}"
        )
    return "\n".join(lines)


def _parse_shapes(text: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise argparse.ArgumentTypeError(f"--shape takes NAME=INT pairs separated by commas, got {part!r}")
        out[name.strip()] = int(value)
    return out


def _cmd(args: argparse.Namespace) -> int:
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    if args.op == "all" and args.shape:
        raise SystemExit("emu-profile: --shape needs one op (shape names differ between ops)")
    ops = sorted(OPS) if args.op == "all" else [args.op]
    report = {}
    for op in ops:
        launches = profile_op(op, args.shape, dtype=dtype)
        shapes = {**OPS[op][0], **(args.shape or {})}
        print(f"{op} {shapes} {args.dtype}")
        print(format_table(launches))
        report[op] = [
            {
                "kernel": L.kernel,
                "grid": L.grid,
                "block": L.block,
                "flops": L.flops,
                "kinds": {k: vars(c) for k, c in L.kinds.items()},
            }
            for L in launches
        ]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def add_parser(sub) -> None:
    """Registers ``tlkernels emu-profile`` on an argparse subparsers object."""
    p = sub.add_parser(
        "emu-profile",
        help="the emulator's counters per kernel launch of an op (coalescing, bank conflicts, divergence, FLOPs)",
    )
    p.add_argument("op", choices=sorted(OPS) + ["all"])
    p.add_argument(
        "--shape",
        type=_parse_shapes,
        default=None,
        help="e.g. B=8,T=16,I=256,O=256 (defaults per op)",
    )
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--json", metavar="PATH")
    p.set_defaults(func=_cmd)
