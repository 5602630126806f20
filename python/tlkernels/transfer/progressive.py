"""Progressive neural networks (Rusu et al. 2016).

Each task gets a column; earlier columns are frozen. Layer i of column k receives its own previous
activation and, through lateral adapters, the previous activations of every earlier column:

    h_i^(k) = f( W_i^(k) h_{i-1}^(k) + sum_{j<k} U_i^(k:j) h_{i-1}^(j) )

A column is an nn.Sequential (nested nn.Sequential blocks are read in order) whose main layers
are nn.Linear, nn.Conv1d or nn.Conv2d; stage i is main layer i plus every module after it up to
the next main layer (activations, pooling, nn.Flatten, and normalisation layers, which belong to
the column and train or freeze with it). Modules before the first main layer form a prefix. The
adapter U_i is a bias-free layer of the same kind as W_i: a Linear from the earlier column's
input width of its layer i, or a convolution with W_i's kernel size, stride, padding and
dilation from the earlier column's input channels of its layer i, so its output has W_i's
shape (columns of the same layer kinds and spatial sizes: a CNN column beside a CNN). The
paper's non-linear adapter MLPs are a refinement not done here. Old columns are never trained:
their parameters have requires_grad=False and they run in eval mode, so transfer cannot erase
them (no forgetting by construction).
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

__all__ = ["ProgressiveNet"]

_MAIN = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _flat(module: nn.Module) -> list[nn.Module]:
    """The modules of an nn.Sequential in order, nested nn.Sequential blocks expanded."""
    out = []
    for m in module:
        out.extend(_flat(m) if isinstance(m, nn.Sequential) else [m])
    return out


def _stages(column: nn.Sequential, arg: str) -> tuple[nn.Module, list[nn.Module], list[nn.Sequential]]:
    """column -> (prefix before the first main layer, the main layers, the modules after each)."""
    if not isinstance(column, nn.Sequential):
        raise ValueError(
            f"{arg} must be an nn.Sequential of nn.Linear / nn.Conv1d / nn.Conv2d layers and the modules "
            f"between them, got {type(column).__name__}"
        )
    prefix, mains, posts = [], [], []
    for m in _flat(column):
        if isinstance(m, _MAIN):
            mains.append(m)
            posts.append([])
        elif mains:
            posts[-1].append(m)
        elif any(True for _ in m.parameters()):
            raise ValueError(
                f"{arg}: a module holding parameters ({type(m).__name__}) comes before the first "
                f"nn.Linear / nn.Conv1d / nn.Conv2d layer"
            )
        else:
            prefix.append(m)
    if not mains:
        raise ValueError(f"{arg} has no nn.Linear, nn.Conv1d or nn.Conv2d layer")
    return nn.Sequential(*prefix), mains, [nn.Sequential(*p) for p in posts]


def _in_width(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def _adapter(src: nn.Module, dst: nn.Module) -> nn.Module:
    """A bias-free lateral from the input of `src` (an earlier column's layer i) to the output of
    `dst` (the new column's layer i): dst's kind and geometry, src's input width."""
    if isinstance(dst, nn.Linear):
        return nn.Linear(src.in_features, dst.out_features, bias=False)
    conv = type(dst)
    return conv(src.in_channels, dst.out_channels, dst.kernel_size, stride=dst.stride, padding=dst.padding,
                dilation=dst.dilation, bias=False, padding_mode=dst.padding_mode)  # fmt: skip


class _Column(nn.Module):
    def __init__(self, column: nn.Sequential, arg: str):
        super().__init__()
        prefix, layers, posts = _stages(column, arg)
        self.prefix, self.layers, self.posts = prefix, nn.ModuleList(layers), nn.ModuleList(posts)
        self.kinds = [type(m) for m in layers]
        self.in_width = _in_width(layers[0])


class ProgressiveNet(nn.Module):
    """Columns with lateral connections; forward(x) is the newest column's output.

    Args:
        source_column: the trained source network (nn.Sequential of nn.Linear / nn.Conv1d /
            nn.Conv2d layers and the modules between them, see the module docstring); it is
            deep-copied and frozen.

    add_column(column): appends a new (trainable) column with the same layer kinds in the same
    order; its layer i (i >= 1) gets an adapter from the stage i-1 output of every earlier column
    (bias-free, zero-initialised unless adapter_init='default', so the new column starts as if
    it were alone and the laterals grow by training). Earlier columns are frozen. Returns the
    new column index.

    forward(x, column=-1): x (N, ...) -> the chosen column's output (N, out) (for an MLP column
    x (N, F) or an image a leading nn.Flatten takes; for a CNN column x (N, C, H, W)).
    """

    def __init__(self, source_column: nn.Sequential):
        super().__init__()
        self.columns = nn.ModuleList()
        self.adapters = nn.ModuleList()  # adapters[k][i][j]: into column k, layer i, from column j
        col = _Column(copy.deepcopy(source_column), "source_column")
        self.columns.append(col)
        self.adapters.append(nn.ModuleList())
        self._freeze(0)

    def _freeze(self, k: int) -> None:
        for p in self.columns[k].parameters():
            p.requires_grad_(False)
        for p in self.adapters[k].parameters():
            p.requires_grad_(False)

    def add_column(self, column: nn.Sequential, adapter_init: str = "zeros") -> int:
        if adapter_init not in ("zeros", "default"):
            raise ValueError(f"adapter_init must be 'zeros' or 'default', got {adapter_init!r}")
        new = _Column(copy.deepcopy(column), "column")
        first = self.columns[0]
        if len(new.layers) != len(first.layers):
            raise ValueError(
                f"column must have {len(first.layers)} main (Linear / Conv) layers like the earlier columns, "
                f"got {len(new.layers)}"
            )
        if new.kinds != first.kinds:
            names = [k.__name__ for k in first.kinds]
            raise ValueError(
                f"column's layer kinds {[k.__name__ for k in new.kinds]} differ from the earlier columns' {names}"
            )
        if new.in_width != first.in_width:
            raise ValueError(f"column's input width {new.in_width} differs from the earlier columns' {first.in_width}")
        for k in range(len(self.columns)):
            self._freeze(k)
        per_layer = nn.ModuleList([nn.ModuleList()])  # layer 0 has no laterals
        for i in range(1, len(new.layers)):
            ads = nn.ModuleList()
            dst = new.layers[i]
            for prev in self.columns:
                a = _adapter(prev.layers[i], dst)
                if adapter_init == "zeros":
                    nn.init.zeros_(a.weight)
                ads.append(a.to(dst.weight.device, dst.weight.dtype))
            per_layer.append(ads)
        self.columns.append(new)
        self.adapters.append(per_layer)
        return len(self.columns) - 1

    def train(self, mode: bool = True):
        super().train(mode)
        for col in list(self.columns)[:-1]:
            col.eval()  # frozen columns keep their eval-mode behaviour (dropout, batch statistics)
        return self

    def forward(self, x: Tensor, column: int = -1) -> Tensor:
        k_last = column % len(self.columns)
        cols = list(self.columns)[: k_last + 1]
        hs = [c.prefix(x) for c in cols]  # the current stage input of every column
        for i in range(len(cols[0].layers)):
            new_hs = []
            for k, c in enumerate(cols):
                z = c.layers[i](hs[k])
                if i > 0 and k > 0:
                    for j in range(k):
                        z = z + self.adapters[k][i][j](hs[j])
                new_hs.append(c.posts[i](z))
            hs = new_hs
        return hs[-1]
