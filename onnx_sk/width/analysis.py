"""Channel spaces of a model and their widths under one scale factor (T-ITS'21 Sec. V-B).

``analyze_channels(model, shapes)`` runs the channel rules (:mod:`onnx_sk.width.walk`) and
returns a :class:`ChannelAnalysis`: every space with its size, members, divisor and whether it is
frozen (and why).

Widths under a scale factor ``s`` (Algorithm 2 applies one ``s`` to every conv): a frozen space
keeps its size ``n``; a free one gets ``w = max(q, round(s·n / q)·q)`` with
``q = lcm(divisor, round_to)`` (and, when the widening must preserve the function, at least
``n``). Spaces tied by a channel shuffle share one width.

The paper solves ``T_old = s²·T_new``; parameters are not exactly quadratic in width
(9·C + C·F for DW+PW) and rounding adds steps, so :func:`solve_scale` bisects ``s`` on the exact
count instead and keeps the ``s`` whose budget ratio is closest to 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx

from onnx_sk.graph.shapes import Shape
from onnx_sk.maths.designs import shuffle_permutation
from onnx_sk.width.edits import AxisMap, ConstEdit, Count, IntValue, Perm
from onnx_sk.width.state import Walk
from onnx_sk.width.walk import walk

Widths = dict[int, int]
#: the budget of --budget: conv parameters (the papers') or all parameters
BUDGETS = ("conv", "all")
MAX_SCALE = 64.0
SCAN_POINTS = 241


@dataclass(frozen=True)
class Space:
    """One channel space: ``size`` channels shared by ``members`` (tensor names, ``t[a:b]``)."""

    id: int
    size: int
    members: tuple[str, ...]
    divisor: int
    granularity: int
    width_class: int
    frozen: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "size": self.size,
            "divisor": self.divisor,
            "frozen": bool(self.frozen),
            "why": list(self.frozen),
            "members": list(self.members),
            "width_class": self.width_class,
        }


@dataclass
class ChannelAnalysis:
    model: onnx.ModelProto
    walk: Walk
    spaces: dict[int, Space]

    @property
    def free(self) -> list[Space]:
        return [s for s in self.spaces.values() if not s.frozen]

    def widths(self, scale: float, round_to: int = 1, at_least_old: bool = False) -> Widths:
        out: Widths = {}
        for sp in self.spaces.values():
            if sp.frozen:
                out[sp.id] = sp.size
                continue
            q = math.lcm(sp.divisor, round_to)
            width = max(q, int(round(scale * sp.size / q)) * q)
            if at_least_old and width < sp.size:
                width = -(-sp.size // q) * q
            out[sp.id] = width
        return out

    def leaves(self, atoms: tuple[int, ...]) -> list[int]:
        return self.walk.spaces.leaves(atoms)

    def width(self, widths: Widths, atoms: tuple[int, ...]) -> int:
        return sum(widths[r] for r in self.leaves(atoms))

    def value(self, v: IntValue, widths: Widths) -> int | np.ndarray:
        """An IntEdit value under ``widths``: ints stay, Count/Perm are computed."""
        if isinstance(v, Count):
            return self.width(widths, v.atoms) * v.mult // v.div
        if isinstance(v, Perm):
            n = self.width(widths, v.atoms)
            perm = shuffle_permutation(n, v.groups) if v.groups > 1 else np.arange(n)
            return perm + int(self.value(v.offset, widths))
        return v

    def new_shape(self, edit: ConstEdit, old: tuple[int, ...], widths: Widths) -> tuple[int, ...]:
        shape = list(old)
        for axis, m in edit.axes:
            shape[axis] = self.width(widths, m.atoms) * m.inner // m.groups
        return tuple(shape)

    def positions(self, m: AxisMap, widths: Widths) -> np.ndarray:
        """New index of every old index along an axis that follows ``m`` (block embedding)."""
        parts: list[np.ndarray] = []
        offset = 0
        for r in self.leaves(m.atoms):
            sp = self.spaces[r]
            new = widths[r]
            b0, b1 = sp.size // sp.granularity, new // sp.granularity
            i = np.arange(sp.size)
            parts.append(offset + (i // b0) * b1 + i % b0)
            offset += new
        ch = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        feats = (ch[:, None] * m.inner + np.arange(m.inner)[None, :]).reshape(-1)
        return feats[: len(feats) // m.groups]

    def edit_of(self) -> dict[tuple[int, int], ConstEdit]:
        return {(e.node, e.input): e for e in self.walk.const_edits}

    def const_sizes(self, widths: Widths) -> dict[tuple[int, int], int]:
        """New element count of every edited constant use (node, input)."""
        out: dict[tuple[int, int], int] = {}
        for e in self.walk.const_edits:
            old = self.walk.constants.dims(self.model.graph.node[e.node].input[e.input])
            assert old is not None  # the rules edit constants only
            out[(e.node, e.input)] = math.prod(self.new_shape(e, old, widths))
        return out

    def float_params(self, widths: Widths) -> int:
        """All floating-point constants of the main graph after widening (edited ones resized)."""
        sizes = self.const_sizes(widths)
        names = {self.model.graph.node[n].input[k]: v for (n, k), v in sizes.items()}
        return sum(names.get(name, size) for name, size in self._float_sizes.items())

    @cached_property
    def _float_sizes(self) -> dict[str, int]:
        """Element count of every floating-point constant (read off the headers, once)."""
        constants = self.walk.constants
        out: dict[str, int] = {}
        for name in constants:
            dtype = constants.dtype(name)
            if dtype is not None and np.issubdtype(dtype, np.floating):
                out[name] = constants.size(name)
        return out

    def conv_params(self, widths: Widths) -> dict[int, int]:
        """Weight + bias elements of every main-graph Conv node (by node index) after widening."""
        sizes = self.const_sizes(widths)
        out: dict[int, int] = {}
        for i, node in enumerate(self.model.graph.node):
            if node.op_type != "Conv":
                continue
            total = 0
            for k in (1, 2):
                if len(node.input) > k and node.input[k]:
                    size = self.walk.constants.size(node.input[k])  # 0: not a constant
                    total += sizes.get((i, k), size)
            out[i] = total
        return out

    def to_dict(self) -> dict:
        spaces = sorted(self.spaces.values(), key=lambda s: s.id)
        return {
            "spaces": [s.to_dict() for s in spaces],
            "free": sum(1 for s in spaces if not s.frozen),
            "frozen": sum(1 for s in spaces if s.frozen),
            "frozen_by": [{"op": op, "reason": why} for op, why in self.walk.frozen_by],
        }


def analyze_channels(model: onnx.ModelProto, shapes: dict[str, Shape]) -> ChannelAnalysis:
    """Every channel space of ``model``'s main graph: size, members, divisor, frozen and why."""
    w = walk(model, shapes)
    gran, cls = w.spaces.resolve()
    members: dict[int, list[str]] = {}
    for t, lay in w.layouts.items():
        leaves = w.spaces.leaves(lay.atoms)
        pos = 0
        for r in leaves:
            n = w.spaces.size(r)
            members.setdefault(r, []).append(t if len(leaves) == 1 else f"{t}[{pos}:{pos + n}]")
            pos += n
    for e in w.const_edits:
        for _, m in e.axes:
            for r in w.spaces.leaves(m.atoms):
                members.setdefault(r, [])
    by_class: dict[int, list[int]] = {}
    for r in members:
        by_class.setdefault(cls.get(r, r), []).append(r)
    spaces: dict[int, Space] = {}
    for c, leaves in by_class.items():
        reasons = [why for r in leaves for why in w.spaces.reasons(r)]
        divisor = math.lcm(*(gran.get(r, 1) for r in leaves))
        for r in leaves:
            spaces[r] = Space(
                r, w.spaces.size(r), tuple(members[r]), divisor, gran.get(r, 1), c,
                tuple(dict.fromkeys(reasons)),
            )  # fmt: skip
    return ChannelAnalysis(model, w, spaces)


@dataclass(frozen=True)
class Solution:
    scale: float
    count: int
    target: int

    @property
    def ratio(self) -> float:
        return self.count / self.target if self.target else float("nan")

    @property
    def met(self) -> bool:
        return abs(self.ratio - 1) <= 0.01


def solve_scale(
    count: Callable[[float], int], target: int, lo: float, hi: float = MAX_SCALE
) -> Solution:
    """The widest ``s`` in [lo, hi] whose ``count(s)`` is within ±1% of ``target``, else the closest.

    Bisection finds a crossing of the step function ``count``; a scan of ±25% around it follows.
    """
    lo_bound, hi_bound = lo, hi
    c_lo, c_hi = count(lo), count(hi)
    if c_lo >= target:
        return Solution(lo, c_lo, target)
    if c_hi <= target:
        return Solution(hi, c_hi, target)
    for _ in range(60):  # invariant: count(lo) < target <= count(hi)
        mid = (lo + hi) / 2
        c = count(mid)
        if c < target:
            lo, c_lo = mid, c
        else:
            hi, c_hi = mid, c
        if hi - lo < 1e-6:
            break
    found = [Solution(lo, c_lo, target), Solution(hi, c_hi, target)]
    # With group numbers re-chosen per width the count is not monotone (a prime width has few
    # admissible groups): scan around the crossing and keep the widest s within ±1%.
    centre = (lo + hi) / 2
    for s in np.linspace(max(lo_bound, 0.75 * centre), min(hi_bound, 1.25 * centre), SCAN_POINTS):
        found.append(Solution(float(s), count(float(s)), target))
    within = [s for s in found if s.met]
    return (
        max(within, key=lambda s: s.scale) if within else min(found, key=lambda s: abs(s.ratio - 1))
    )
