"""nn.RNN / nn.LSTM / nn.GRU, decomposed: the fused recurrent kernel hides its per-step products,
so during a capture the module runs as the same recurrence written with recorded projections.

The input projection of a layer is one linear map over all time steps (the ghost products of a
Linear layer); the hidden projection is recorded at every step and its steps are grouped into one
representation over all positions. Covers layers, bidirectional, bias, dropout between layers,
``proj_size`` (LSTM), given initial states, ``batch_first`` both ways, and every output (``out``,
``h_n``, ``c_n``). Packed sequences and unbatched inputs are refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..registry import Rule, UnsupportedModuleError, register_rule


class RecurrentRule(Rule):
    decomposes = True

    def forward(self, m: nn.RNNBase, rec, input, hx=None):
        if isinstance(input, PackedSequence):
            raise UnsupportedModuleError(
                f"{type(m).__name__} got a PackedSequence: per-sample products need a padded batch (pad the sequences "
                "and mask the loss)"
            )
        if input.dim() != 3:
            raise UnsupportedModuleError(
                f"{type(m).__name__} got an unbatched input of shape {tuple(input.shape)}: per-sample products need "
                "a batch"
            )
        x = input if m.batch_first else input.transpose(0, 1)  # (B, T, I)
        bsz = x.shape[0]
        dirs = 2 if m.bidirectional else 1
        lstm = m.mode == "LSTM"
        h_out = m.proj_size if getattr(m, "proj_size", 0) else m.hidden_size
        if hx is None:
            h0 = x.new_zeros(m.num_layers * dirs, bsz, h_out)
            c0 = x.new_zeros(m.num_layers * dirs, bsz, m.hidden_size) if lstm else None
        elif lstm:
            h0, c0 = hx
        else:
            h0, c0 = hx, None
        h_n, c_n = [], []
        layer_input = x
        for layer in range(m.num_layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                out, h, c = self._direction(m, rec, layer_input, layer, d, h0[k], c0[k] if lstm else None)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            layer_input = torch.cat(outs, 2) if dirs == 2 else outs[0]
            if m.dropout > 0 and m.training and layer < m.num_layers - 1:
                layer_input = F.dropout(layer_input, p=m.dropout)
        output = layer_input if m.batch_first else layer_input.transpose(0, 1)
        h_n = torch.stack(h_n)
        return (output, (h_n, torch.stack(c_n))) if lstm else (output, h_n)

    def _direction(self, m, rec, x: Tensor, layer: int, d: int, h: Tensor, c: Tensor | None):
        """One layer in one direction: (output (B, T, H_out), last h, last c)."""
        sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
        bias_ih = f"bias_ih{sfx}" if m.bias else None
        bias_hh = f"bias_hh{sfx}" if m.bias else None
        gi = rec.linear(m, x, f"weight_ih{sfx}", bias_ih)  # (B, T, G): all steps at once
        group, proj_group = rec.new_group(), rec.new_group()
        steps = range(x.shape[1] - 1, -1, -1) if d == 1 else range(x.shape[1])
        hs = [None] * x.shape[1]
        for t in steps:
            gh = rec.linear(m, h, f"weight_hh{sfx}", bias_hh, group=group)
            if m.mode == "LSTM":
                i, f, g, o = (gi[:, t] + gh).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                if getattr(m, "proj_size", 0):
                    h = rec.linear(m, h, f"weight_hr{sfx}", None, group=proj_group)
            elif m.mode == "GRU":
                ir, iz, inn = gi[:, t].chunk(3, 1)
                hr, hz, hn = gh.chunk(3, 1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = torch.tanh(inn + r * hn)
                h = (1 - z) * n + z * h
            elif m.mode == "RNN_TANH":
                h = torch.tanh(gi[:, t] + gh)
            else:
                h = torch.relu(gi[:, t] + gh)
            hs[t] = h
        return torch.stack(hs, 1), h, c


register_rule(nn.RNNBase, RecurrentRule())
