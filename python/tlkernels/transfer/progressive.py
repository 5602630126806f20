"""Progressive neural networks (Rusu et al. 2016).

Each task gets a column; earlier columns are frozen. Layer i of column k receives its own previous
activation and, through lateral adapters, the previous activations of every earlier column:

    h_i^(k) = f( W_i^(k) h_{i-1}^(k) + sum_{j<k} U_i^(k:j) h_{i-1}^(j) )

A column is an nn.Sequential of nn.Linear layers with parameter-free modules between them
(activations, dropout, a leading nn.Flatten); stage i is Linear i plus the modules after it. The
adapters U are linear maps (the paper's non-linear adapter MLPs are a refinement not done here).
Old columns are never trained: their parameters have requires_grad=False and they run in eval
mode, so transfer cannot erase them (no forgetting by construction).
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

__all__ = ["ProgressiveNet"]


def _stages(column: nn.Sequential, arg: str) -> tuple[nn.Module, list[nn.Linear], list[nn.Sequential]]:
    """column -> (prefix before the first Linear, the Linear layers, the modules after each)."""
    if not isinstance(column, nn.Sequential):
        raise ValueError(
            f"{arg} must be an nn.Sequential of nn.Linear layers and parameter-free modules, "
            f"got {type(column).__name__}"
        )
    prefix, linears, posts = [], [], []
    for m in column:
        if isinstance(m, nn.Linear):
            linears.append(m)
            posts.append([])
        elif any(True for _ in m.parameters()):
            raise ValueError(f"{arg}: only nn.Linear layers may hold parameters, found {type(m).__name__}")
        elif linears:
            posts[-1].append(m)
        else:
            prefix.append(m)
    if not linears:
        raise ValueError(f"{arg} has no nn.Linear layer")
    return nn.Sequential(*prefix), linears, [nn.Sequential(*p) for p in posts]


class _Column(nn.Module):
    def __init__(self, column: nn.Sequential, arg: str):
        super().__init__()
        prefix, linears, posts = _stages(column, arg)
        self.prefix, self.linears, self.posts = prefix, nn.ModuleList(linears), nn.ModuleList(posts)
        self.widths = [m.out_features for m in linears]
        self.in_features = linears[0].in_features


class ProgressiveNet(nn.Module):
    """Columns with lateral connections; forward(x) is the newest column's output.

    Args:
        source_column: the trained source network (nn.Sequential of nn.Linear + activations); it is
            deep-copied and frozen.

    add_column(column): appends a new (trainable) column of the same depth; its Linear i (i >= 1)
    gets an adapter from Linear i-1's stage output of every earlier column (bias-free, zero-
    initialised unless adapter_init='default', so the new column starts as if it were alone and
    the laterals grow by training). Earlier columns are frozen. Returns the new column index.

    forward(x, column=-1): x (N, ...) -> the chosen column's output (N, out).
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
        if len(new.linears) != len(first.linears):
            raise ValueError(
                f"column must have {len(first.linears)} nn.Linear layers like the earlier columns, "
                f"got {len(new.linears)}"
            )
        if new.in_features != first.in_features:
            raise ValueError(
                f"column's input width {new.in_features} differs from the earlier columns' {first.in_features}"
            )
        for k in range(len(self.columns)):
            self._freeze(k)
        per_layer = nn.ModuleList([nn.ModuleList()])  # layer 0 has no laterals
        for i in range(1, len(new.linears)):
            ads = nn.ModuleList()
            for prev in self.columns:
                a = nn.Linear(prev.widths[i - 1], new.widths[i], bias=False)
                if adapter_init == "zeros":
                    nn.init.zeros_(a.weight)
                ads.append(a.to(new.linears[i].weight.device, new.linears[i].weight.dtype))
            per_layer.append(ads)
        self.columns.append(new)
        self.adapters.append(per_layer)
        return len(self.columns) - 1

    def train(self, mode: bool = True):
        super().train(mode)
        for col in list(self.columns)[:-1]:
            col.eval()  # frozen columns keep their eval-mode behaviour (dropout off)
        return self

    def forward(self, x: Tensor, column: int = -1) -> Tensor:
        k_last = column % len(self.columns)
        hs: list[Tensor] = []  # the current stage input of every column
        cols = list(self.columns)[: k_last + 1]
        hs = [c.prefix(x) for c in cols]
        for i in range(len(cols[0].linears)):
            new_hs = []
            for k, c in enumerate(cols):
                z = c.linears[i](hs[k])
                if i > 0 and k > 0:
                    for j in range(k):
                        z = z + self.adapters[k][i][j](hs[j])
                new_hs.append(c.posts[i](z))
            hs = new_hs
        return hs[-1]
