"""Per-sample gradient representations, one per kind of layer.

A representation holds what one call of one layer left behind during a capture (its inputs and
the gradient of the summed per-sample losses with respect to its output) for ONE parameter, and
answers, without materialising per-sample gradients where it can avoid it:

- ``dot(v)``: s_i = <dl_i/dp, v> for v of the parameter's shape, or (V, *shape) -> (B, V);
- ``dense()``: the per-sample gradients (B, *shape) (used when nothing cheaper exists);
- ``norms()``: squared per-sample norms (B,);
- ``weighted(w)``: sum_i w_i dl_i/dp (the bookkeeping step: one GEMM for a linear layer).

Gram matrices between two representations of the same parameter are formed by ``gram``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import ops

__all__ = [
    "ConvRep",
    "DenseRep",
    "EmbeddingRep",
    "LinearRep",
    "SliceRep",
    "ghost_is_cheaper",
    "gram",
]

# Bound on the elements of any temporary the ghost formulations build (chunks are sized by it).
_CHUNK_ELEMENTS = 1 << 24


def ghost_is_cheaper(b1: int, b2: int, t1: int, t2: int, n_in: int, n_out: int) -> bool:
    """The per-layer choice for a Gram between B1 and B2 samples of a linear layer applied at T1
    and T2 positions. Ghost: B1 B2 T1 T2 (I + O) multiply-adds (tiles of A1 A2^T and D1 D2^T).
    Materialising: (B1 T1 + B2 T2) I O to form every Q_i, then B1 B2 I O for the Gram. Bu et al.'s
    rule 2 T T' < I O is this comparison without the Gram term; measured on the token model
    (T = 64, I = 256, O = 1024, B = 32) it picked ghost where materialising was 1.4x faster."""
    ghost = b1 * b2 * t1 * t2 * (n_in + n_out)
    materialise = (b1 * t1 + b2 * t2) * n_in * n_out + b1 * b2 * n_in * n_out
    return ghost < materialise


def _flat_vectors(v: Tensor, shape: torch.Size) -> tuple[Tensor, bool]:
    """v of `shape` -> (1, *shape), False; v of (V, *shape) -> v, True."""
    if v.shape == shape:
        return v.unsqueeze(0), False
    if v.dim() == len(shape) + 1 and v.shape[1:] == shape:
        return v, True
    raise ValueError(
        f"vector must have shape {tuple(shape)} or (V, {', '.join(map(str, shape))}), got {tuple(v.shape)}"
    )


def _finish(s: Tensor, many: bool) -> Tensor:
    return s if many else s[:, 0]


class DenseRep:
    """Materialised per-sample gradients g (B, *shape): biases, norm layers, fallbacks."""

    def __init__(self, g: Tensor):
        self.g = g  # (B, *shape)

    @property
    def batch(self) -> int:
        return self.g.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.g.dtype

    def dense(self) -> Tensor:
        return self.g

    def dot(self, v: Tensor) -> Tensor:
        vv, many = _flat_vectors(v, self.g.shape[1:])
        return _finish(self.g.flatten(1) @ vv.flatten(1).T, many)

    def norms(self) -> Tensor:
        return self.g.flatten(1).pow(2).sum(1)

    def weighted(self, w: Tensor) -> Tensor:
        if self.g.dim() == 1:  # a scalar parameter
            return torch.tensordot(w, self.g, dims=([0], [0]))
        # the (1, B) x (B, P) product tensordot forms, without its Python wrapper
        return torch.mm(w.unsqueeze(0), self.g.reshape(self.g.shape[0], -1)).view(self.g.shape[1:])


class LinearRep:
    """The weight (O, I) of a linear map applied at T positions: A (B, T, I), D (B, T, O);
    Q_i = sum_t d_it a_it^T."""

    def __init__(self, a: Tensor, d: Tensor):
        self.a, self.d = a, d  # (B, T, I), (B, T, O)

    @property
    def batch(self) -> int:
        return self.a.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.d.dtype

    def dense(self) -> Tensor:
        return torch.einsum("bto,bti->boi", self.d, self.a)

    def dot(self, v: Tensor) -> Tensor:
        shape = torch.Size((self.d.shape[2], self.a.shape[2]))
        vv, many = _flat_vectors(v, shape)
        return _finish(ops.ghost_dot(self.a, self.d, vv), many)

    def norms(self) -> Tensor:
        # the op picks, per sample, between T x T tiles and forming that sample's Q_i
        return ops.ghost_norm(self.a, self.d)

    def weighted(self, w: Tensor) -> Tensor:
        # sum_i w_i D_i^T A_i as one GEMM over all (sample, position) rows
        b, t, n_out = self.d.shape
        return (self.d * w.view(b, 1, 1)).reshape(b * t, n_out).T @ self.a.reshape(b * t, -1)


class EmbeddingRep:
    """An embedding table (R, E) looked up at T positions: idx (B, T), D (B, T, E); rows equal to
    padding_idx receive no gradient."""

    def __init__(self, idx: Tensor, d: Tensor, num_rows: int, padding_idx: int | None):
        self.num_rows, self.padding_idx = num_rows, padding_idx
        if padding_idx is not None:
            d = d * (idx != padding_idx).unsqueeze(-1).to(d.dtype)
        self.idx, self.d = idx, d  # (B, T), (B, T, E)

    @property
    def batch(self) -> int:
        return self.idx.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.d.dtype

    def dense(self) -> Tensor:
        b, t, e = self.d.shape
        out = self.d.new_zeros(b, self.num_rows, e)
        return out.scatter_add_(1, self.idx.unsqueeze(-1).expand(b, t, e), self.d)

    def dot(self, v: Tensor) -> Tensor:
        vv, many = _flat_vectors(v, torch.Size((self.num_rows, self.d.shape[2])))
        # s_iv = sum_t d_it . V_v[idx_it]
        rows = vv[:, self.idx]  # (V, B, T, E)
        return _finish(torch.einsum("bte,vbte->bv", self.d, rows), many)

    def norms(self) -> Tensor:
        return _embedding_gram(self, self, diagonal=True)

    def weighted(self, w: Tensor) -> Tensor:
        b, t, e = self.d.shape
        out = self.d.new_zeros(self.num_rows, e)
        return out.index_add_(0, self.idx.reshape(-1), (self.d * w.view(b, 1, 1)).reshape(b * t, e))


def _embedding_gram(r1: EmbeddingRep, r2: EmbeddingRep, diagonal: bool = False) -> Tensor:
    """<Q1_i, Q2_j> = sum_{t,t'} [idx1_it == idx2_jt'] d1_it . d2_jt', in chunks of samples."""
    b1, t1, _ = r1.d.shape
    b2, t2, _ = r2.d.shape
    if diagonal:
        eq = r1.idx.unsqueeze(2) == r2.idx.unsqueeze(1)  # (B, T, T)
        return (torch.einsum("bte,bse->bts", r1.d, r2.d) * eq).sum((1, 2))
    out = r1.d.new_empty(b1, b2)
    step = max(1, _CHUNK_ELEMENTS // max(1, b2 * t1 * t2))
    for i in range(0, b1, step):
        sl = slice(i, i + step)
        eq = r1.idx[sl, None, :, None] == r2.idx[None, :, None, :]  # (c, B2, T1, T2)
        dd = torch.einsum("ite,jse->ijts", r1.d[sl], r2.d)
        out[sl] = (dd * eq).sum((2, 3))
    return out


class ConvRep:
    """The weight of a ConvNd: the layer's input x (B, C, *S) and output gradient dy (B, O, *S').
    The dot runs the layer's own convolution with v as the weight (no unfold). Norms and Grams of
    1-d and 2-d convolutions see the layer as a linear map applied at the L output positions to
    the unfolded input patches (B, L, C k), in chunks of samples: the linear op then picks, per
    sample, between L x L tiles and forming Q_i, whichever is cheaper; grouped convolutions form
    Q_i per group with one einsum. 3-d convolutions materialise by a grouped convolution backward."""

    def __init__(self, module: torch.nn.modules.conv._ConvNd, x: Tensor, dy: Tensor):
        self.module, self.x, self.dy = module, x, dy

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.dy.dtype

    def dot(self, v: Tensor) -> Tensor:
        vv, many = _flat_vectors(v, self.module.weight.shape)
        dy = self.dy.flatten(1).unsqueeze(2)  # (B, N, 1)
        # <conv(x, v), dy> per sample as a batched dot: no product temporary of the output's size
        s = torch.stack(
            [torch.bmm(self.module._conv_forward(self.x, vk, None).flatten(1).unsqueeze(1), dy)[:, 0, 0] for vk in vv],
            1,
        )
        return _finish(s, many)

    @property
    def unfoldable(self) -> bool:
        return len(self.module.kernel_size) <= 2

    def patches(self, rows: slice) -> tuple[Tensor, Tensor]:
        """Samples `rows` as a linear map per group: patches (b, G, L, C/G k) and output gradients
        (b, G, L, O/G), with the patch layout of weight.flatten(1)."""
        m = self.module
        x, dy = self._padded_input()[rows], self.dy[rows]
        k, stride, dil, pad = m.kernel_size, m.stride, m.dilation, self._numeric_padding()
        if len(k) == 1:  # a 1-d convolution is a 2-d one of height 1
            x, dy = x.unsqueeze(2), dy.unsqueeze(2)
            k, stride, dil, pad = (1, *k), (1, *stride), (1, *dil), (0, *pad)
        u = F.unfold(x, k, dilation=dil, padding=pad, stride=stride)  # (b, C k, L)
        b, g = u.shape[0], m.groups
        u = u.view(b, g, -1, u.shape[-1]).transpose(2, 3)
        d = dy.reshape(b, g, dy.shape[1] // g, -1).transpose(2, 3)
        return u, d

    def _chunks(self) -> list[slice]:
        m, b = self.module, self.x.shape[0]
        per_sample = max(1, self.dy[0].numel() * m.weight[0].numel())  # L x C k elements of the patches
        step = max(1, _CHUNK_ELEMENTS // per_sample)
        return [slice(i, i + step) for i in range(0, b, step)]

    def dense(self) -> Tensor:
        m = self.module
        if not self.unfoldable:
            return self._dense_by_grouped_backward()
        parts = []
        for rows in self._chunks():
            u, d = self.patches(rows)
            parts.append(torch.einsum("bglo,bglk->bgok", d, u).reshape(-1, *m.weight.shape))
        return torch.cat(parts)

    def norms(self) -> Tensor:
        if not self.unfoldable:
            return self._dense_by_grouped_backward().flatten(1).pow(2).sum(1)
        out = []
        for rows in self._chunks():
            u, d = self.patches(rows)
            if u.shape[1] == 1:
                out.append(ops.ghost_norm(u[:, 0].contiguous(), d[:, 0].contiguous()))
            else:
                out.append(torch.einsum("bglo,bglk->bgok", d, u).flatten(1).pow(2).sum(1))
        return torch.cat(out)

    def linear(self) -> LinearRep | None:
        """The whole batch as one LinearRep (ungrouped 1-d / 2-d convolutions only), for Grams."""
        if not self.unfoldable or self.module.groups != 1:
            return None
        u, d = self.patches(slice(None))
        return LinearRep(u[:, 0], d[:, 0])

    def _dense_by_grouped_backward(self) -> Tensor:
        # Per-sample weight gradients: treat the batch as extra groups of one convolution.
        m = self.module
        b = self.x.shape[0]
        x = self._padded_input()
        o, cg = m.weight.shape[0], m.weight.shape[1]
        xg = x.reshape(1, b * x.shape[1], *x.shape[2:])
        dyg = self.dy.reshape(1, b * o, *self.dy.shape[2:])
        wg = m.weight.new_empty((b * o, cg, *m.weight.shape[2:]))  # only its shape is read
        return self._weight_gradient(dyg, xg, wg, m.groups * b).reshape(b, o, cg, *m.weight.shape[2:])

    def weighted(self, w: Tensor) -> Tensor:
        m = self.module
        scaled = self.dy * w.view(-1, *([1] * (self.dy.dim() - 1)))
        return self._weight_gradient(scaled, self._padded_input(), m.weight, m.groups)

    def _weight_gradient(self, dy: Tensor, x: Tensor, weight: Tensor, groups: int) -> Tensor:
        """The layer's weight gradient for output gradient dy and (padded) input x, with `groups`
        groups and a weight of weight's shape (only its shape is read)."""
        m = self.module
        return torch.ops.aten.convolution_backward(
            dy, x, weight, None, m.stride, self._numeric_padding(), m.dilation, False, [0] * (x.dim() - 2), groups,
            [False, True, False],
        )[1]  # fmt: skip

    # 'same' padding and non-zero padding modes, turned into an explicitly padded input
    def _padded_input(self) -> Tensor:
        m = self.module
        if m.padding_mode != "zeros":
            return F.pad(self.x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
        if isinstance(m.padding, str) and m.padding == "same":
            pads = []
            for k, d in zip(reversed(m.kernel_size), reversed(m.dilation)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return F.pad(self.x, pads)
        return self.x

    def _numeric_padding(self) -> list[int]:
        m = self.module
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return [0] * len(m.kernel_size)  # 'valid', or padding already applied
        return list(m.padding)


class SliceRep:
    """Rows [start, stop) of a parameter of shape `shape` (a packed projection such as
    MultiheadAttention's in_proj_weight, whose q, k and v rows see different inputs); the other
    rows receive nothing from this call. `inner` represents the slice (B, stop - start, ...)."""

    def __init__(self, inner, start: int, stop: int, shape: torch.Size):
        self.inner, self.start, self.stop, self.shape = (
            inner,
            start,
            stop,
            torch.Size(shape),
        )

    @property
    def batch(self) -> int:
        return self.inner.batch

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    def dense(self) -> Tensor:
        part = self.inner.dense()  # (B, stop - start, ...)
        out = part.new_zeros((part.shape[0],) + tuple(self.shape))
        out[:, self.start : self.stop] = part
        return out

    def dot(self, v: Tensor) -> Tensor:
        vv, many = _flat_vectors(v, self.shape)
        return _finish(self.inner.dot(vv[:, self.start : self.stop]), many)

    def norms(self) -> Tensor:
        return self.inner.norms()

    def weighted(self, w: Tensor) -> Tensor:
        part = self.inner.weighted(w)
        out = part.new_zeros(self.shape)
        out[self.start : self.stop] = part.reshape(out[self.start : self.stop].shape)
        return out


def disjoint(r1, r2) -> bool:
    """True when two representations of one parameter cover disjoint rows."""
    return isinstance(r1, SliceRep) and isinstance(r2, SliceRep) and (r1.stop <= r2.start or r2.stop <= r1.start)


def gram(r1, r2) -> Tensor:
    """(B1, B2) Gram of two representations of the same parameter."""
    if isinstance(r1, SliceRep) and isinstance(r2, SliceRep):
        if disjoint(r1, r2):
            return _zeros_gram(r1, r2)
        if (r1.start, r1.stop) == (r2.start, r2.stop):
            return gram(r1.inner, r2.inner)
    if isinstance(r1, ConvRep) and isinstance(r2, ConvRep):
        l1, l2 = r1.linear(), r2.linear()
        if l1 is not None and l2 is not None:
            r1, r2 = l1, l2
    if isinstance(r1, LinearRep) and isinstance(r2, LinearRep):
        (b1, t1, n_in), (b2, t2, _), n_out = r1.a.shape, r2.a.shape, r1.d.shape[2]
        if ghost_is_cheaper(b1, b2, t1, t2, n_in, n_out):
            return ops.ghost_gram(r1.a, r1.d, r2.a, r2.d)
    if isinstance(r1, EmbeddingRep) and isinstance(r2, EmbeddingRep):
        e = r1.d.shape[2]
        if r1.idx.shape[1] * r2.idx.shape[1] < r1.num_rows * e:
            return _embedding_gram(r1, r2)
    return r1.dense().flatten(1) @ r2.dense().flatten(1).T


def _zeros_gram(r1, r2) -> Tensor:
    inner = r1.inner
    ref = inner.g if isinstance(inner, DenseRep) else inner.d if hasattr(inner, "d") else inner.dy
    return ref.new_zeros(r1.batch, r2.batch)


def numel_per_sample(rep) -> int:
    """Elements of one per-sample gradient of the representation's parameter."""
    if isinstance(rep, SliceRep):
        return math.prod(rep.shape)
    if isinstance(rep, DenseRep):
        return math.prod(rep.g.shape[1:])
    if isinstance(rep, LinearRep):
        return rep.a.shape[2] * rep.d.shape[2]
    if isinstance(rep, EmbeddingRep):
        return rep.num_rows * rep.d.shape[2]
    return rep.module.weight.numel()
