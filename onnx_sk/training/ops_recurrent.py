"""LSTM and GRU as torch rules: the ONNX recurrences written out, weights used in ONNX's own layout.

Shapes (``layout`` 0; ``layout`` 1 puts batch first in X, Y, the states): X [seq, batch, I];
W [dirs, G·H, I], R [dirs, G·H, H], B [dirs, 2·G·H] (Wb then Rb); Y [seq, dirs, batch, H],
Y_h and Y_c [dirs, batch, H]. Direction 0 runs forward (or backward for ``reverse``), direction 1
of ``bidirectional`` backward. With ``sequence_lens`` L, sample b steps only while t < L_b: its
state is kept and its Y is 0 past its end (so a backward pass starts at L_b − 1).

LSTM (G = 4, gates in ONNX order i, o, f, c; peepholes P [dirs, 3·H] in order i, o, f):
    i = f(Xₜ·Wᵢᵀ + H·Rᵢᵀ + Pᵢ⊙C + Wbᵢ + Rbᵢ)     f = f(… gate f …, Pf⊙C)   (input_forget: f = 1 − i)
    c̃ = g(Xₜ·W_cᵀ + H·R_cᵀ + Wb_c + Rb_c)        C′ = f⊙C + i⊙c̃
    o = f(Xₜ·W_oᵀ + H·R_oᵀ + P_o⊙C′ + Wb_o + Rb_o)  H′ = o⊙h(C′)
GRU (G = 3, gates z, r, h):
    z = f(Xₜ·W_zᵀ + H·R_zᵀ + Wb_z + Rb_z)   r = f(… gate r …)
    h̃ = g(Xₜ·W_hᵀ + (r⊙H)·R_hᵀ + Rb_h + Wb_h)      (linear_before_reset 0)
    h̃ = g(Xₜ·W_hᵀ + r⊙(H·R_hᵀ + Rb_h) + Wb_h)      (linear_before_reset 1, torch's form)
    H′ = (1 − z)⊙h̃ + z⊙H
f, g, h are ``activations`` (default Sigmoid, Tanh, Tanh; Relu also accepted); ``clip`` c clamps
the input of f and g to [−c, c] (not that of h, as in ONNX Runtime).

Fast path: with the default activations and no clip, peepholes, input_forget or sequence_lens
(GRU: linear_before_reset 1) the same weights, gate blocks reordered to torch's (LSTM i, f, c, o
from ONNX i, o, f, c; GRU r, z, h from z, r, h), run through torch's own kernel (``torch.lstm`` /
``torch.gru``, what ``nn.LSTM`` / ``nn.GRU`` call), so gradients reach the ONNX-layout
parameters and ``torch.onnx.export`` writes one LSTM / GRU node again; ``reverse`` runs forward on
the time-flipped sequence. Tᵢ·Wᵀ for all t is one matmul; only the R products loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from onnx_sk.training.registry import Attrs, Interpreter, Node, op

#: an activation: f, g or h of the recurrence
Act = Callable[[torch.Tensor], torch.Tensor]

_ACT: dict[str, Act] = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu}


def _check(gates: int) -> Callable[[Attrs], str | None]:
    def check(a: Attrs) -> str | None:
        acts = a.get("activations", [])
        bad = [x for x in acts if x not in _ACT]
        if bad or "activation_alpha" in a or "activation_beta" in a:
            return f"activations {bad or acts}"
        return None

    return check


def _acts(a: Attrs, d: int, n: int, clip: float | None) -> list[Act]:
    names = a.get("activations") or (["Sigmoid", "Tanh", "Tanh"][:n] * 2)
    fns = [_ACT[x] for x in names[d * n : (d + 1) * n]]
    if clip is None:
        return fns
    # the gates' inputs are clipped; LSTM's h(C′) is not (ONNX Runtime's reading of ``clip``)
    return [lambda v, f=f: f(v.clamp(-clip, clip)) for f in fns[:2]] + fns[2:]


def _prepare(
    a: Attrs,
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    lens: torch.Tensor | None,
    states: list[torch.Tensor | None],
) -> tuple[torch.Tensor, int, int, int, list[bool], torch.Tensor | None, list[torch.Tensor | None]]:
    """Time-major X, per-direction reversal flags, an optional step mask, states without layout."""
    layout = a.get("layout", 0)
    if layout:
        x = x.transpose(0, 1)
        states = [None if s is None else s.transpose(0, 1) for s in states]
    seq, batch = x.shape[0], x.shape[1]
    dirs = w.shape[0]
    direction = a.get("direction", "forward")
    reverse = [direction == "reverse" or d == 1 for d in range(dirs)]
    mask = None
    if lens is not None:
        steps = torch.arange(seq, device=x.device)[:, None]
        mask = (steps < lens.to(x.device).reshape(1, -1)).unsqueeze(-1)  # [seq, batch, 1]
    return x, seq, batch, dirs, reverse, mask, states


def _finish(
    a: Attrs, ys: list[torch.Tensor], finals: list[list[torch.Tensor]]
) -> tuple[torch.Tensor, ...]:
    y = torch.stack(ys, 1)  # [seq, dirs, batch, H]
    outs = [torch.stack(f, 0) for f in finals]  # [dirs, batch, H]
    if a.get("layout", 0):
        return (y.permute(2, 0, 1, 3), *[s.transpose(0, 1) for s in outs])
    return (y, *outs)


def _plain(a: Attrs, gates: int, lens: torch.Tensor | None, *extra: torch.Tensor | None) -> bool:
    """Default activations, no clip, no sequence_lens, none of ``extra`` (peepholes) given."""
    defaults = ["Sigmoid", "Tanh", "Tanh"][: 3 if gates == 4 else 2] * 2
    acts = a.get("activations") or defaults
    return (
        list(acts) == defaults[: len(acts)]
        and "clip" not in a
        and lens is None
        and all(e is None for e in extra)
    )


def _fused(
    kind: str,
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor | None,
    states: list[torch.Tensor | None],
    reverse: bool,
) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """torch's LSTM / GRU kernel (what ``torch.nn.LSTM`` / ``GRU`` call; ``torch.onnx.export``
    writes it back as one ONNX LSTM / GRU) on ONNX weights: time-major x, states [dirs, batch, H]."""
    dirs, hidden = int(w.shape[0]), int(r.shape[-1])
    order = [0, 2, 3, 1] if kind == "LSTM" else [1, 0, 2]
    gates = len(order)

    def torch_order(t: torch.Tensor) -> torch.Tensor:  # gate blocks along dim 0
        return torch.cat([t[k * hidden : (k + 1) * hidden] for k in order], 0)

    params: list[torch.Tensor] = []
    for d in range(dirs):  # per direction: w_ih, w_hh, b_ih, b_hh
        bias = b[d] if b is not None else x.new_zeros(2 * gates * hidden)
        params += [torch_order(w[d]), torch_order(r[d])]
        params += [torch_order(bias[: gates * hidden]), torch_order(bias[gates * hidden :])]
    batch = x.shape[1]
    init = [s if s is not None else x.new_zeros(dirs, batch, hidden) for s in states]
    xs = x.flip(0) if reverse else x
    flags = (
        True,
        1,
        0.0,
        False,
        dirs == 2,
        False,
    )  # biases, layers, dropout, train, bidir, batch_first
    if kind == "LSTM":
        y, h, c = torch.lstm(xs, (init[0], init[1]), params, *flags)
        finals = [list(h), list(c)]
    else:
        y, h = torch.gru(xs, init[0], params, *flags)
        finals = [list(h)]
    y = y.reshape(x.shape[0], batch, dirs, hidden).permute(0, 2, 1, 3)  # [seq, dirs, batch, H]
    return (y.flip(0) if reverse else y), finals


def _step(mask: torch.Tensor | None, t: int, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return new if mask is None else torch.where(mask[t], new, old)


@op("LSTM", weights=(1, 2, 3, 7), outputs=3, check=_check(3))
def _lstm(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor | None = None,
    lens: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    c0: torch.Tensor | None = None,
    p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    x, seq, batch, dirs, reverse, mask, (h0, c0) = _prepare(a, x, w, r, lens, [h0, c0])
    if _plain(a, 4, lens, p) and not a.get("input_forget", 0):
        y, finals = _fused("LSTM", x, w, r, b, [h0, c0], reverse[0] and dirs == 1)
        return _finish(a, [y[:, d] for d in range(dirs)], finals)
    hidden = r.shape[-1]
    clip = a.get("clip")
    ys: list[torch.Tensor] = []
    hs: list[torch.Tensor] = []
    cs: list[torch.Tensor] = []
    for d in range(dirs):
        f, g, h_act = _acts(a, d, 3, clip)
        xw = x @ w[d].t()  # [seq, batch, 4H]
        if b is not None:
            xw = xw + b[d, : 4 * hidden] + b[d, 4 * hidden :]
        h = h0[d] if h0 is not None else x.new_zeros(batch, hidden)
        c = c0[d] if c0 is not None else x.new_zeros(batch, hidden)
        pi, po, pf = p[d].split(hidden) if p is not None else (0, 0, 0)
        out: list[torch.Tensor] = []  # in step order (backward: from the last t)
        for t in reversed(range(seq)) if reverse[d] else range(seq):
            gi, go, gf, gc = (xw[t] + h @ r[d].t()).split(hidden, -1)
            i = f(gi + pi * c)
            fg = 1 - i if a.get("input_forget", 0) else f(gf + pf * c)
            c_new = fg * c + i * g(gc)
            h_new = f(go + po * c_new) * h_act(c_new)
            out.append(h_new if mask is None else h_new * mask[t])
            h, c = _step(mask, t, h_new, h), _step(mask, t, c_new, c)
        ys.append(torch.stack(out[::-1] if reverse[d] else out, 0))
        hs.append(h)
        cs.append(c)
    return _finish(a, ys, [hs, cs])


@op("GRU", weights=(1, 2, 3), outputs=2, check=_check(2))
def _gru(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor | None = None,
    lens: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    x, seq, batch, dirs, reverse, mask, (h0,) = _prepare(a, x, w, r, lens, [h0])
    if _plain(a, 3, lens) and a.get("linear_before_reset", 0):
        y, finals = _fused("GRU", x, w, r, b, [h0], reverse[0] and dirs == 1)
        return _finish(a, [y[:, d] for d in range(dirs)], finals)
    hidden = r.shape[-1]
    before_reset = a.get("linear_before_reset", 0)
    ys: list[torch.Tensor] = []
    hs: list[torch.Tensor] = []
    for d in range(dirs):
        f, g = _acts(a, d, 2, a.get("clip"))
        xw = x @ w[d].t()  # [seq, batch, 3H]
        rb = b[d, 3 * hidden :] if b is not None else x.new_zeros(3 * hidden)
        if b is not None:
            xw = xw + b[d, : 3 * hidden]
        rz, rr, rh = r[d].split(hidden, 0)  # each [H, H]
        bz, br, bh = rb.split(hidden)
        h = h0[d] if h0 is not None else x.new_zeros(batch, hidden)
        out: list[torch.Tensor] = []  # in step order (backward: from the last t)
        for t in reversed(range(seq)) if reverse[d] else range(seq):
            xz, xr, xh = xw[t].split(hidden, -1)
            z = f(xz + h @ rz.t() + bz)
            reset = f(xr + h @ rr.t() + br)
            if before_reset:
                cand = g(xh + reset * (h @ rh.t() + bh))
            else:
                cand = g(xh + (reset * h) @ rh.t() + bh)
            h_new = (1 - z) * cand + z * h
            out.append(h_new if mask is None else h_new * mask[t])
            h = _step(mask, t, h_new, h)
        ys.append(torch.stack(out[::-1] if reverse[d] else out, 0))
        hs.append(h)
    return _finish(a, ys, [hs])
