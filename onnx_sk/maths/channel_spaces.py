"""Channel spaces: which channel axes of a graph must keep the same width (union-find).

Every tensor that carries channels has a :class:`Layout`: the axis that holds them and the
sequence of *atoms* along it (a plain tensor has one atom; a Concat output has one per input).
Atoms are merged by ``unite`` (a residual Add, a BatchNormalization, a depthwise conv: the same
channels on both sides) and cut by ``split`` (a Split or Slice whose boundary falls inside an
atom): the cut applies to the whole class, so every tensor tied to it sees the same segments.
A *space* is a class of atoms that is not cut further (a leaf class). Widening gives every space
one new width; a Concat's width is the sum of its segments' widths.

Constraints recorded while walking the graph and resolved at the end, once the classes are final:

- ``group(atoms, g)``: a grouped conv with ``g`` groups over these channels; one space must hold
  all of them and its width stays a multiple of ``g`` (the space's *divisor* is the lcm of the
  group numbers that touch it); a grouped conv across several spaces freezes them;
- ``shuffle(pre, post, g)``: a channel shuffle with ``g`` groups. ``pre`` and ``post`` get the same
  width, and ``pre``'s divisor is ``g`` times ``post``'s, so that after widening each of the ``g``
  groups still holds whole blocks of ``post``'s group structure;
- ``freeze(atoms, reason)``: the width may not change (graph input/output, an op without a rule).

This module imports the standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """Where a tensor's channels are: ``axis``, the atoms along it, ``inner`` features per channel.

    ``inner`` > 1 after a Flatten: channel ``c`` owns features ``[c·inner, (c+1)·inner)``.
    """

    axis: int
    atoms: tuple[int, ...]
    inner: int = 1


@dataclass(frozen=True)
class Shuffle:
    pre: int
    post: int
    groups: int
    node: str


class Spaces:
    """Union-find over channel atoms, with refinement (an atom cut into consecutive children)."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._children: dict[int, list[int]] = {}
        self._reasons: dict[int, list[str]] = {}
        self._groups: list[tuple[tuple[int, ...], int, str]] = []
        self.shuffles: list[Shuffle] = []
        self._shuffle_requests: list[tuple[tuple[int, ...], tuple[int, ...], int, str]] = []

    # -- atoms -------------------------------------------------------------------------------
    def new(self, size: int, frozen: str | None = None) -> int:
        a = len(self._parent)
        self._parent.append(a)
        self._size.append(int(size))
        if frozen:
            self._reasons[a] = [frozen]
        return a

    def find(self, a: int) -> int:
        root = a
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[a] != root:
            self._parent[a], a = root, self._parent[a]
        return root

    def size(self, a: int) -> int:
        return self._size[self.find(a)]

    def leaves(self, atoms: tuple[int, ...] | list[int]) -> list[int]:
        """The leaf classes (roots) that ``atoms`` cover, in order."""
        out: list[int] = []
        for a in atoms:
            r = self.find(a)
            kids = self._children.get(r)
            out.extend(self.leaves(kids) if kids else [r])
        return out

    def total(self, atoms: tuple[int, ...]) -> int:
        return sum(self._size[r] for r in self.leaves(atoms))

    def _split_leaf(self, r: int, first: int) -> tuple[int, int]:
        assert r not in self._children and 0 < first < self._size[r]
        reasons = self._reasons.get(r, [])
        a = self.new(first)
        b = self.new(self._size[r] - first)
        for kid in (a, b):
            if reasons:
                self._reasons[kid] = list(reasons)
        self._children[r] = [a, b]
        return a, b

    def cut(self, atoms: tuple[int, ...], offsets: list[int]) -> list[tuple[int, ...]]:
        """Cut the channel range of ``atoms`` at ``offsets`` (sorted, inside); returns the pieces."""
        bounds = [0, *offsets, self.total(atoms)]
        for off in offsets:
            pos = 0
            for r in self.leaves(atoms):
                n = self._size[r]
                if pos < off < pos + n:
                    self._split_leaf(r, off - pos)
                    break
                pos += n
        pieces: list[list[int]] = [[] for _ in range(len(bounds) - 1)]
        pos, k = 0, 0
        for r in self.leaves(atoms):
            while pos >= bounds[k + 1]:
                k += 1
            pieces[k].append(r)
            pos += self._size[r]
        return [tuple(p) for p in pieces]

    def unite(self, xs: tuple[int, ...], ys: tuple[int, ...]) -> None:
        """Tie two channel ranges of equal length channel by channel (refining both as needed)."""
        if self.total(xs) != self.total(ys):
            raise ValueError(f"cannot tie {self.total(xs)} channels to {self.total(ys)}")
        while True:
            la, lb = self.leaves(xs), self.leaves(ys)
            cut = self._first_mismatch(la, lb)
            if cut is None:
                break
            leaf, at = cut
            self._split_leaf(leaf, at)
        for a, b in zip(self.leaves(xs), self.leaves(ys), strict=True):
            self._union(a, b)

    def _first_mismatch(self, la: list[int], lb: list[int]) -> tuple[int, int] | None:
        i = j = 0
        pa = pb = 0  # start offsets of la[i], lb[j]
        while i < len(la) and j < len(lb):
            ea, eb = pa + self._size[la[i]], pb + self._size[lb[j]]
            if ea == eb:
                pa, pb, i, j = ea, eb, i + 1, j + 1
            elif ea > eb:
                return la[i], eb - pa
            else:
                return lb[j], ea - pb
        return None

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        assert self._size[ra] == self._size[rb]
        self._parent[rb] = ra
        reasons = self._reasons.pop(rb, [])
        if reasons:
            self._reasons.setdefault(ra, []).extend(reasons)

    # -- constraints -------------------------------------------------------------------------
    def freeze(self, atoms: tuple[int, ...], reason: str) -> None:
        for r in self.leaves(atoms):
            got = self._reasons.setdefault(r, [])
            if reason not in got:
                got.append(reason)

    def group(self, atoms: tuple[int, ...], groups: int, node: str) -> None:
        if groups > 1:
            self._groups.append((tuple(atoms), groups, node))

    def shuffle(self, pre: tuple[int, ...], post: tuple[int, ...], groups: int, node: str) -> None:
        self._shuffle_requests.append((tuple(pre), tuple(post), groups, node))

    def reasons(self, leaf: int) -> list[str]:
        return self._reasons.get(self.find(leaf), [])

    def resolve(self) -> tuple[dict[int, int], dict[int, int]]:
        """Apply the recorded constraints: ``(granularity, width class)`` of every leaf.

        The granularity of a space is the lcm of the groups that touch it (times ``g`` ahead of a
        shuffle); spaces tied by a shuffle share a width class.
        """
        gran: dict[int, int] = {}
        for atoms, g, node in self._groups:
            leaves = self.leaves(atoms)
            if len(leaves) != 1:
                self.freeze(
                    atoms, f"grouped conv {node!r} (group={g}) spans {len(leaves)} channel spaces"
                )
                continue
            gran[leaves[0]] = math.lcm(gran.get(leaves[0], 1), g)
        self.shuffles = []
        for pre, post, g, node in self._shuffle_requests:
            lp, lq = self.leaves(pre), self.leaves(post)
            if len(lp) != 1 or len(lq) != 1:
                self.freeze(pre + post, f"channel shuffle {node!r} over several channel spaces")
                continue
            self.shuffles.append(Shuffle(lp[0], lq[0], g, node))
        changed = True
        while changed:
            changed = False
            for s in self.shuffles:
                p = math.lcm(gran.get(s.pre, 1), s.groups * gran.get(s.post, 1))
                q = p // s.groups
                if p != gran.get(s.pre, 1) or q != gran.get(s.post, 1):
                    gran[s.pre], gran[s.post], changed = p, q, True
        cls = {r: r for r in gran}

        def find(r: int) -> int:
            while cls.setdefault(r, r) != r:
                r = cls[r]
            return r

        for s in self.shuffles:
            a, b = find(s.pre), find(s.post)
            if a != b:
                cls[b] = a
        for leaf, d in list(gran.items()):
            if self._size[leaf] % d:
                self.freeze((leaf,), f"{self._size[leaf]} channels are not a multiple of {d}")
        return gran, {r: find(r) for r in cls}
