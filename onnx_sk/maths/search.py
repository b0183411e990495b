"""Algorithm 1 of T-ITS'21 (ICLR'19 Sec. 3.1): reduce the space of sparse-kernel designs, for real.

A design is a sequence of up to ``L`` kernels from four types, for a dense target ``C→C``
``3×3`` conv whose information field is ``(3, 3, C)``:

====  ======  ======================================  ===========================================
type  letter  conv                                    admissible group number (width w → w')
====  ======  ======================================  ===========================================
GC    ``G``   3×3 group conv                          1 < M < w, M | w  (M = w is DW, M = 1 dense)
DW    ``D``   3×3 depthwise                           w (w > 1)
PW    ``P``   1×1 conv                                1
PWG   ``Q``   1×1 group conv                          1 < N, N | w, N | w', not N = w = w'
====  ======  ======================================  ===========================================

The rules, in the order Algorithm 1 applies them (``docs/search-rules.md`` gives the reasons):

1. Composition (lines 5–9): the design written one letter per kernel is removed if the regular
   expression ``(.+?)\\1+`` matches it. ``regex="start"`` is the printed ``re.match`` (anchored at
   the start only: removes designs that *begin* with a repeated block, e.g. ``PPD``, ``DPDPG``);
   ``"full"`` is ``re.fullmatch`` (the whole design is a repetition: ``DD``, ``DPDP``, the text's
   AAAAAA/ABABAB/ABCABC); ``"any"`` is ``re.search`` (a repeat anywhere). One letter per kernel:
   on names such as ``PWPWG`` the expression would see the false repeat ``PW PW``.
2. Information field (lines 10–35, footnotes 1–2), from ``currInfo = (1, 1, 1)`` per design
   (the printed line 10 initialises it once, outside the loop; that is a slip), kernel by kernel,
   on the exact field of :mod:`onnx_sk.maths.infofield`:

   - ``no_growth``: the size ``(kh, kw, #channels)`` after a kernel equals the size before it
     (efficiency case 1, line 16);
   - ``overshoot``: the size is not ``≤ (3, 3, C)`` componentwise (case 2, line 20; only a second
     spatial kernel can do this, so a design has exactly one GC or DW);
   - ``short``: after the last kernel the size is less than ``(3, 3, C)`` (line 31);
   - ``no_group``: a kernel has no admissible group number at the current width (bottleneck only).

   Footnote 2: every admissible group number is tried, and a channel permutation may be put
   before every grouped kernel (GC, PWG) that is not the first: the identity or a ShuffleNet
   shuffle with ``g`` groups, ``g | w``, ``1 < g < w`` (a permutation before DW commutes with it,
   one before PW or the first kernel cannot change a size). A design survives if *one* choice
   passes; all passing choices are the same design.
3. Bottleneck (``bottleneck=True``; the papers "also consider the bottleneck structure"): a
   pointwise kernel (PW, PWG) may shrink the width ``C → K = C/4``, and only the *last* kernel may
   restore ``K → C``. The restoring kernel is exempt from the ``no_growth`` check (the output
   shape needs it); everything else is as above, and the final width must be ``C``.

Removal attribution: composition first; a design whose every choice died at the same kernel is
removed by that kernel's reason (``overshoot`` before ``no_growth`` before ``no_group`` when the
choices disagree); one with a choice that reached the end is ``short``. The counts sum to
``4 + 4² + … + 4^L``.

Speed: designs share prefixes, so the search walks the trie of kernel sequences keeping, per
prefix, the set of live field states (width, field) and, per state, the cheapest witness and the
number of choice paths; a step from a state is memoised by ``(field.key, kernel, last)``.

Each survivor is reported with its cheapest witness (stages as :class:`designs.Stage`, shuffles
on the output of the stage before the grouped kernel), weight parameters and MACs at the reference
layer (``C→C`` 3×3, stride 1, 56×56), its mirror (the reversed sequence, when it survives too) and
the papers' name when it is one of their four designs.

This module imports numpy and the standard library only (plus onnx-sk's maths modules).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from onnx_sk.maths.designs import DW, GC, PW, PWG, Realisation, Stage, divisors, shuffle_permutation
from onnx_sk.maths.domain import DomainError
from onnx_sk.maths.infofield import Field, FieldKey
from onnx_sk.maths.spec import ConvSpec

KERNEL_TYPES = (GC, DW, PW, PWG)
LETTERS = {GC: "G", DW: "D", PW: "P", PWG: "Q"}
SPATIAL = {GC: True, DW: True, PW: False, PWG: False}
PATTERN = re.compile(r"(.+?)\1+")
REGEX_MODES = {"start": PATTERN.match, "full": PATTERN.fullmatch, "any": PATTERN.search}
REASONS = ("composition", "no_growth", "overshoot", "no_group", "short")
_PRECEDENCE = ("overshoot", "no_growth", "no_group")
#: the papers' four designs (ICLR'19 Sec. 3.2) as kernel sequences
PAPER_DESIGNS = {
    (DW, PW): "dw-pw",
    (GC, PWG): "gc-pwg",
    (PW, DW, PW): "pw-dw-pw",
    (PWG, DW, PWG): "pwg-dw-pwg",
}
KERNEL_SHAPE = (3, 3)
_AREA = KERNEL_SHAPE[0] * KERNEL_SHAPE[1]
REFERENCE_SPATIAL = (56, 56)
DEFAULT_CHANNELS = 16
DEFAULT_MAX_LENGTH = 6
#: the search is refused above this width (a field step costs time and memory in C)
MAX_CHANNELS = 1024
#: and stopped past this much work: a field step (one kernel choice applied to one field state)
#: composes two [C, C] connectivity matrices, about C³ operations, so the work is steps × C³;
#: 2e10 is 10-30 s. A width with many divisors (48, 72, 96, ...) has many group and shuffle
#: choices per kernel, so the step count, not only the width, grows without bound
MAX_SEARCH_WORK = 20_000_000_000


@dataclass(frozen=True)
class Survivor:
    """One surviving design (a kernel sequence; all its passing choices are the same design)."""

    kernels: tuple[str, ...]
    witness: tuple[Stage, ...]  # the cheapest passing choice
    params: int  # weight parameters of the witness at the reference layer
    macs: int  # MACs of the witness at the reference layer
    choices: int  # number of passing (group, shuffle, width) choices
    paper: str | None = None
    mirror: str | None = None  # name of the reversed sequence if it survives too

    @property
    def name(self) -> str:
        return "+".join(self.kernels)

    @property
    def letters(self) -> str:
        return "".join(LETTERS[k] for k in self.kernels)


@dataclass(frozen=True)
class SearchResult:
    channels: int
    max_length: int
    kernels: tuple[str, ...]
    regex: str
    bottleneck: int | None  # K, or None without the bottleneck variant
    total: int
    removed: dict[str, int]
    survivors: tuple[Survivor, ...]
    paper_missing: tuple[str, ...] = field(default=())
    #: every design's fate: a reason from REASONS, or "survived"
    fate: dict[tuple[str, ...], str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def dense_params(self) -> int:
        return self.channels * self.channels * KERNEL_SHAPE[0] * KERNEL_SHAPE[1]


@dataclass(frozen=True)
class _Path:
    """Cheapest way (so far) to reach one field state, and how many ways there are."""

    params: int
    stages: tuple[Stage, ...]
    count: int


#: (shuffle before, group, output width) of one kernel
_Choice: TypeAlias = tuple[int, int, int]
#: a choice and what it led to: the new field, or the reason it was removed
_Outcome: TypeAlias = tuple[_Choice, "Field | str"]
#: live field states of one prefix: field key -> (field, cheapest path to it)
_States: TypeAlias = dict[FieldKey, tuple[Field, _Path]]


def _pw_group_choices(w_in: int, w_out: int, kind: str) -> list[int]:
    if kind == PW:
        return [1]
    return [
        g
        for g in divisors(min(w_in, w_out))
        if g > 1 and w_in % g == 0 and w_out % g == 0 and not (g == w_in == w_out)
    ]


class _Searcher:
    def __init__(self, channels: int, bottleneck: int | None, budget: int | None) -> None:
        self.c = channels
        self.k = bottleneck
        self.standard = (*KERNEL_SHAPE, channels)
        self.memo: dict[tuple[FieldKey, str, bool, bool], list[_Outcome]] = {}
        self.limit = self.budget = budget  # work left, in field steps × C³ (None: unbounded)

    def _spend(self, steps: int) -> None:
        if self.budget is None:
            return
        self.budget -= steps
        if self.budget < 0:
            raise DomainError(
                f"--channels {self.c}: the search needs more than {self.limit:.0e} units "
                "of work (field steps × C³): stopped. A width with many divisors has "
                "many group numbers and shuffles per kernel: try one with fewer divisors, fewer "
                "--kernels or a shorter --max-length"
            )

    def is_standard(self, f: Field) -> bool:
        """The dense conv's field: size (3, 3, C) at width C (line 31 of Algorithm 1)."""
        return f.c_out == self.c and f.size == self.standard

    def choices(self, width: int, kind: str, first: bool, last: bool) -> list[_Choice]:
        """(shuffle before, group, output width) choices for a kernel at ``width``."""
        if SPATIAL[kind]:
            outs = [width]
        else:
            outs = [width]
            if self.k is not None and width == self.c:
                outs.append(self.k)
            if self.k is not None and width == self.k and last:
                outs.append(self.c)
        result: list[_Choice] = []
        for w_out in outs:
            if kind == GC:
                groups = [m for m in divisors(width) if 1 < m < width]
            elif kind == DW:
                groups = [width] if width > 1 else []
            else:
                groups = _pw_group_choices(width, w_out, kind)
            for g in groups:
                shuffles = [0]
                if not first and kind in (GC, PWG):
                    shuffles += [s for s in divisors(width) if 1 < s < width]
                result.extend((s, g, w_out) for s in shuffles)
        return result

    def step(self, state: Field, kind: str, first: bool, last: bool) -> list[_Outcome]:
        """Outcomes ``((shuffle, group, w_out), Field | reason)`` of one kernel after ``state``."""
        last = last and self.k is not None  # only the bottleneck's restore depends on it
        key = (state.key, kind, first, last)
        if key in self.memo:
            return self.memo[key]
        width = state.c_out
        before = state.size
        out: list[_Outcome] = []
        choices = self.choices(width, kind, first, last)
        self._spend(len(choices) * self.c**3)
        if not choices:
            out.append(((0, 0, 0), "no_group"))
        for shuffle, group, w_out in choices:
            f = state
            if shuffle:
                f = f.then_permutation(_shuffle(width, shuffle))
            f = f.then_conv(w_out, KERNEL_SHAPE if SPATIAL[kind] else None, (), (), group)
            restore = self.k is not None and width == self.k and w_out == self.c
            if f.size == before and not restore:
                out.append(((shuffle, group, w_out), "no_growth"))
            elif any(a > b for a, b in zip(f.size, self.standard, strict=True)):
                out.append(((shuffle, group, w_out), "overshoot"))
            else:
                out.append(((shuffle, group, w_out), f))
        self.memo[key] = out
        return out


def _shuffle(channels: int, groups: int) -> list[int]:
    return shuffle_permutation(channels, groups).tolist()


def _stage(kind: str, w_in: int, w_out: int, group: int) -> Stage:
    return Stage(kind, w_in, w_out, group, SPATIAL[kind])


def _extend(path: _Path, kind: str, choice: _Choice, w_in: int) -> _Path:
    shuffle, group, w_out = choice
    stages = path.stages
    if shuffle:
        stages = (*stages[:-1], replace(stages[-1], shuffle=shuffle))
    new = _stage(kind, w_in, w_out, group)
    # [c_out, c_in // group, kh, kw]
    params = w_out * (w_in // group) * (_AREA if new.spatial else 1)
    return _Path(path.params + params, (*stages, new), path.count)


def _merge(states: _States, f: Field, path: _Path) -> None:
    old = states.get(f.key)
    if old is None:
        states[f.key] = (f, path)
        return
    best = old[1]
    cheaper = path.params < best.params or (
        path.params == best.params and _shuffles(path) < _shuffles(best)
    )
    winner = path if cheaper else best
    states[f.key] = (f, _Path(winner.params, winner.stages, best.count + path.count))


def _validate(
    channels: int, max_length: int, kernels: Sequence[str], regex: str, bottleneck: bool
) -> tuple[str, ...]:
    if max_length < 1:
        raise DomainError(f"--max-length must be at least 1, got {max_length}")
    if max_length > 8:
        raise DomainError(f"--max-length {max_length} is too large (at most 8: 4^8 designs)")
    if channels > MAX_CHANNELS:
        raise DomainError(f"--channels {channels} is too large (at most {MAX_CHANNELS})")
    if channels < 4 or all(channels % m for m in range(2, math.isqrt(channels) + 1)):
        raise DomainError(
            f"--channels must be a composite number ≥ 4 so that GC and PWG have a group number "
            f"1 < M < C, got {channels}"
        )
    if bottleneck and (channels % 4 or channels < 8):
        raise DomainError(f"--bottleneck needs --channels divisible by 4 and ≥ 8, got {channels}")
    if regex not in REGEX_MODES:
        raise DomainError(f"--regex must be one of {', '.join(REGEX_MODES)}, got {regex!r}")
    kinds = tuple(k.strip().upper() for k in kernels if k.strip())
    bad = [k for k in kinds if k not in KERNEL_TYPES]
    if bad or not kinds:
        raise DomainError(
            f"unknown kernel type(s) {', '.join(bad) or '(none given)'}; "
            f"choose from {', '.join(KERNEL_TYPES)}"
        )
    if len(set(kinds)) != len(kinds):
        raise DomainError(f"kernel types repeated in {', '.join(kinds)}")
    return kinds


def search(
    channels: int = DEFAULT_CHANNELS,
    max_length: int = DEFAULT_MAX_LENGTH,
    kernels: Sequence[str] = KERNEL_TYPES,
    regex: str = "start",
    bottleneck: bool = False,
    max_work: int = MAX_SEARCH_WORK,
) -> SearchResult:
    """Run Algorithm 1 on every sequence of ``kernels`` up to ``max_length`` for ``C→C`` 3×3
    (stopped with a DomainError past ``max_work``, in field steps × C³)."""
    kinds = _validate(channels, max_length, kernels, regex, bottleneck)
    k = channels // 4 if bottleneck else None
    searcher = _Searcher(channels, k, max_work)
    matcher = REGEX_MODES[regex]
    removed = dict.fromkeys(REASONS, 0)
    fate: dict[tuple[str, ...], str] = {}
    passed: dict[tuple[str, ...], _Path] = {}
    total = 0

    # trie walk: prefix → ({field key: (field, path)}, reason all choices died, if they did)
    start = Field.identity(channels, len(KERNEL_SHAPE))
    level: dict[tuple[str, ...], tuple[_States, str | None]] = {
        (): ({start.key: (start, _Path(0, (), 1))}, None)
    }
    for depth in range(1, max_length + 1):
        nxt: dict[tuple[str, ...], tuple[_States, str | None]] = {}
        for prefix, (states, dead) in level.items():
            for kind in kinds:
                seq = (*prefix, kind)
                total += 1
                alive, final, reason = _advance(searcher, states, kind, depth == 1, dead)
                if depth < max_length:
                    nxt[seq] = (alive, reason)
                winners = [p for f, p in final.values() if searcher.is_standard(f)]
                if matcher("".join(LETTERS[s] for s in seq)):
                    fate[seq] = "composition"
                elif winners:
                    best = min(winners, key=lambda p: (p.params, _shuffles(p)))
                    passed[seq] = _Path(best.params, best.stages, sum(p.count for p in winners))
                    fate[seq] = "survived"
                elif final:
                    fate[seq] = "short"
                else:
                    # nothing reached the end: alive is empty too (a final choice set contains the
                    # non-final one), so _advance named the reason every choice died
                    assert reason is not None
                    fate[seq] = reason
                if fate[seq] != "survived":
                    removed[fate[seq]] += 1
        level = nxt

    survivors = _survivors(channels, passed)
    names = {s.kernels for s in survivors}
    missing = tuple(n for seq, n in PAPER_DESIGNS.items() if seq not in names)
    return SearchResult(
        channels, max_length, kinds, regex, k, total, removed, tuple(survivors), missing, fate
    )


def _shuffles(path: _Path) -> int:
    return sum(1 for s in path.stages if s.shuffle)


def _advance(
    searcher: _Searcher, states: _States, kind: str, first: bool, dead: str | None
) -> tuple[_States, _States, str | None]:
    """Apply ``kind`` to every live state: live states, final candidates, reason if all died."""
    if not states:
        return {}, {}, dead
    alive: _States = {}
    final: _States = {}
    reasons: set[str] = set()
    passes = (False,) if searcher.k is None else (False, True)
    for f, path in states.values():
        for last in passes:
            target = final if last else alive
            for choice, outcome in searcher.step(f, kind, first, last):
                if isinstance(outcome, str):
                    reasons.add(outcome)
                    continue
                _merge(target, outcome, _extend(path, kind, choice, f.c_out))
    if searcher.k is None:
        final = alive
    if alive:
        return alive, final, None
    # every non-final choice died here; final-only (restoring) choices cannot be extended
    reason = next(r for r in _PRECEDENCE if r in reasons)
    return alive, final, reason


def _survivors(channels: int, passed: dict[tuple[str, ...], _Path]) -> list[Survivor]:
    spec = ConvSpec(channels, channels, KERNEL_SHAPE)
    out = []
    for seq, path in passed.items():
        real = Realisation("+".join(seq), spec, path.stages)
        mirror = tuple(reversed(seq))
        out.append(
            Survivor(
                seq,
                path.stages,
                real.weight_params,
                real.macs(REFERENCE_SPATIAL, REFERENCE_SPATIAL),
                path.count,
                PAPER_DESIGNS.get(seq),
                "+".join(mirror) if mirror != seq and mirror in passed else None,
            )
        )
    out.sort(key=lambda s: (s.params, len(s.kernels), s.kernels))
    return out


def passing_choices(
    kernels: Sequence[str], channels: int, bottleneck: bool = False
) -> list[tuple[Stage, ...]]:
    """Brute force, no memo: every choice path of one design that passes the field rules.

    The twin of :func:`search` for tests; ignores the composition rule.
    """
    k = channels // 4 if bottleneck else None
    searcher = _Searcher(channels, k, None)
    start = Field.identity(channels, len(KERNEL_SHAPE))
    out = []
    n = len(kernels)

    def walk(i: int, f: Field, stages: tuple[Stage, ...]) -> None:
        if i == n:
            if searcher.is_standard(f):
                out.append(stages)
            return
        kind = kernels[i]
        for choice, outcome in searcher.step(f, kind, i == 0, i == n - 1):
            if isinstance(outcome, str):
                continue
            path = _extend(_Path(0, stages, 1), kind, choice, f.c_out)
            walk(i + 1, outcome, path.stages)

    walk(0, start, ())
    return out


def sequences(kernels: Sequence[str], max_length: int) -> list[tuple[str, ...]]:
    """Every sequence of ``kernels`` of length 1..max_length (the original design space)."""
    return [seq for n in range(1, max_length + 1) for seq in itertools.product(kernels, repeat=n)]


def witness_text(stages: Sequence[Stage]) -> str:
    """``GC(M=8,16→16) |shuffle 8| PWG(N=2,16→16)``: groups, widths and where the shuffles go."""
    parts = []
    for s in stages:
        label = {GC: "M", PWG: "N"}.get(s.kind)
        g = f"{label}={s.group}," if label else ""
        parts.append(f"{s.kind}({g}{s.c_in}→{s.c_out})")
        if s.shuffle:
            parts.append(f"shuffle({s.shuffle})")
    return " → ".join(parts)


def result_to_dict(result: SearchResult) -> dict[str, Any]:
    """A JSON-ready document of a search."""
    return {
        "channels": result.channels,
        "max_length": result.max_length,
        "kernels": list(result.kernels),
        "regex": result.regex,
        "bottleneck": result.bottleneck,
        "total": result.total,
        "removed": dict(result.removed),
        "survived": len(result.survivors),
        "dense_params": result.dense_params,
        "reference_layer": {
            "c_in": result.channels,
            "c_out": result.channels,
            "kernel_shape": list(KERNEL_SHAPE),
            "spatial": list(REFERENCE_SPATIAL),
        },
        "paper_missing": list(result.paper_missing),
        "survivors": [
            {
                "design": s.name,
                "letters": s.letters,
                "length": len(s.kernels),
                "paper": s.paper,
                "mirror": s.mirror,
                "choices": s.choices,
                "params": s.params,
                "macs": s.macs,
                "ratio": s.params / result.dense_params,
                "witness": witness_text(s.witness),
                "stages": [
                    {
                        "kind": st.kind,
                        "c_in": st.c_in,
                        "c_out": st.c_out,
                        "group": st.group,
                        "spatial": st.spatial,
                        "shuffle_after": st.shuffle,
                    }
                    for st in s.witness
                ],
            }
            for s in result.survivors
        ],
    }
