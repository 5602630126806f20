"""nn.RNN / nn.LSTM / nn.GRU, decomposed: the fused recurrent kernel hides its per-step products,
so during a capture the module runs as the same recurrence written with recorded projections.

The input projection of a layer is one linear map over all time steps, recorded once. The hidden
projection needs no recording of its own: its output enters the same gate pre-activations as the
input projection's (LSTM, RNN: pre_t = W_ih x_t + W_hh h_{t-1} + b), so the gradient recorded for
the input projection at step t is also the hidden projection's, and its per-sample gradient is a
linear map over the steps with inputs h_{t-1} (GRU: the candidate gate's hidden part is scaled by
the reset gate r_t, kept from the forward). The ``proj_size`` projection of an LSTM is recorded
at every step, its steps grouped into one representation. Covers layers, bidirectional, bias, dropout between layers,
``proj_size`` (LSTM), given initial states, ``batch_first`` both ways, and every output (``out``,
``h_n``, ``c_n``). Packed sequences and unbatched inputs are refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..registry import LayerCall, Rule, UnsupportedModuleError, register_rule
from ..reps import DenseRep, LinearRep


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
        names = {"weight_ih": f"weight_ih{sfx}", "weight_hh": f"weight_hh{sfx}",
                 "bias_ih": f"bias_ih{sfx}" if m.bias else None, "bias_hh": f"bias_hh{sfx}" if m.bias else None}  # fmt: skip
        w_hh, b_hh = getattr(m, names["weight_hh"]), getattr(m, names["bias_hh"]) if m.bias else None
        info = dict(names, mode=m.mode)
        b_ih = getattr(m, names["bias_ih"]) if m.bias else None
        gi = rec.record(m, GATES, (x,), {}, F.linear(x, getattr(m, names["weight_ih"]), b_ih), 0, info=info)
        proj_group = rec.new_group()
        steps = range(x.shape[1] - 1, -1, -1) if d == 1 else range(x.shape[1])
        hs, h_prev, resets = [None] * x.shape[1], [None] * x.shape[1], [None] * x.shape[1]
        for t in steps:
            h_prev[t] = h
            gh = F.linear(h, w_hh, b_hh)  # its per-sample gradient comes from the gates' (GATES)
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
                resets[t] = r.detach()
                n = torch.tanh(inn + r * hn)
                h = (1 - z) * n + z * h
            elif m.mode == "RNN_TANH":
                h = torch.tanh(gi[:, t] + gh)
            else:
                h = torch.relu(gi[:, t] + gh)
            hs[t] = h
        if torch.is_grad_enabled():
            info["h_prev"] = torch.stack(h_prev, 1).detach()  # (B, T, H_out): what W_hh multiplied at each step
            info["reset"] = torch.stack(resets, 1) if m.mode == "GRU" else None  # (B, T, H)
        return torch.stack(hs, 1), h, c


class GatesRule(Rule):
    """The gate pre-activations of one layer and direction: the input projection W_ih x_t + b_ih
    recorded over all steps, and from the same gradients the hidden projection W_hh h_{t-1} + b_hh."""

    def representations(self, calls: list[LayerCall], batch_size: int):
        (call,) = calls
        m, info = call.module, call.info
        a, dg = call.args[0], call.grads[0]  # (B, T, I), (B, T, G)
        for name, make in (
            (info["weight_ih"], lambda: LinearRep(a, dg)),
            (info["bias_ih"], lambda: DenseRep(dg.sum(1))),
        ):
            p = getattr(m, name) if name is not None else None
            if p is not None and p.requires_grad:
                yield p, make()
        dh = dg
        if info["mode"] == "GRU":  # n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): the hidden part is scaled by r
            d_r, d_z, d_n = dg.chunk(3, 2)
            dh = torch.cat([d_r, d_z, d_n * info["reset"]], 2)
        for name, make in (
            (info["weight_hh"], lambda: LinearRep(info["h_prev"], dh)),
            (info["bias_hh"], lambda: DenseRep(dh.sum(1))),
        ):
            p = getattr(m, name) if name is not None else None
            if p is not None and p.requires_grad:
                yield p, make()


GATES = GatesRule()
register_rule(nn.RNNBase, RecurrentRule())
