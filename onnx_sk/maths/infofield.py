"""The information field of a chain of convolutions: spatial receptive field + channel connectivity.

Definition (ICLR'19 Sec. 3.1, T-ITS'21 Sec. III-A.2, Definition 1): the information field of an
output activation is the part of the input tensor that the convs use to compute it. The papers
summarise it as a size vector ``(kh, kw, #channels)``; the dense ``kh×kw`` conv ``C→F`` has
``(kh, kw, C)``. Footnote 1 of T-ITS: the spatial size grows by ``k − 1`` per kernel, and with
group convs "the channel dependency with regards to the input channels must be recorded for all
output channels". This module records it exactly, structurally (from the group numbers, never
from weight values):

Spatial, per axis (the receptive field; strides and dilations compose)::

    a conv with kernel k, stride s, dilation d has offsets {0, d, ..., (k−1)·d}, jump s
    chain A then B:   offsets = {a + b·jump_A : a ∈ offsets_A, b ∈ offsets_B}
                      extent  = extent_A + (extent_B − 1)·jump_A   (rf += (k−1)·d·jump)
                      jump    = jump_A · jump_B

``extent`` is ``max(offsets) − min(offsets) + 1``; ``offsets`` also records the holes that
dilations leave, so two fields are equal only if they read exactly the same input positions.
In a chain every channel path goes through every stage, so the spatial and the channel parts are
independent and the full dependency is their product.

Channels: ``connectivity  # bool [c_out, c_in]``, ``connectivity[o, c]`` iff output channel ``o``
depends on input channel ``c``. A conv with ``group`` groups is block diagonal::

    G[o, c] = (o div (c_out/group)) == (c div (c_in/group))

a channel permutation ``perm`` (output ``o`` reads input ``perm[o]``; a ShuffleNet shuffle, a
``Gather`` on axis 1) selects rows: ``P = connectivity[perm]``; chain A then B:
``connectivity = B ∘ A`` as a boolean matrix product.

The papers' size: ``size = (*extent, channels)`` with ``channels = min_o Σ_c connectivity[o, c]``
(the least-connected output). A field ``covers`` another if it reads a superset of its positions
and channels; it ``equals`` it if they read the same ones (and step with the same ``jump``).

This module imports numpy and the standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypeAlias

import numpy as np

from onnx_sk.maths.designs import Stage, shuffle_permutation
from onnx_sk.maths.spec import ConvSpec

#: hashable identity of a field: (connectivity shape, packed connectivity bits, offsets, jump)
FieldKey: TypeAlias = tuple[tuple[int, ...], bytes, tuple[tuple[int, ...], ...], tuple[int, ...]]


def group_connectivity(c_in: int, c_out: int, group: int) -> np.ndarray:
    """Block-diagonal ``bool [c_out, c_in]`` of a conv with ``group`` groups."""
    if group < 1 or c_in % group or c_out % group:
        raise ValueError(f"group {group} does not divide c_in {c_in} and c_out {c_out}")
    out_group = np.arange(c_out) // (c_out // group)
    in_group = np.arange(c_in) // (c_in // group)
    return out_group[:, None] == in_group[None, :]


def _offsets(extent: int) -> tuple[int, ...]:
    return tuple(range(extent))


@dataclass(frozen=True, eq=False)
class Field:
    """Information field of a chain: what each output activation reads of the chain's input.

    ``extent``: receptive field per spatial axis; ``connectivity``: ``bool [c_out, c_in]``;
    ``jump``: input pixels between neighbouring outputs (product of strides); ``offsets``: the
    input offsets read per axis (``range(extent)`` unless dilations leave holes).
    """

    extent: tuple[int, ...]
    connectivity: np.ndarray  # bool [c_out, c_in]
    jump: tuple[int, ...] = ()
    offsets: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        conn = np.array(self.connectivity, dtype=bool)
        if conn.ndim != 2:
            raise ValueError(f"connectivity must be [c_out, c_in], got shape {conn.shape}")
        conn.setflags(write=False)
        object.__setattr__(self, "connectivity", conn)
        extent = tuple(int(e) for e in self.extent)
        object.__setattr__(self, "extent", extent)
        if not self.jump:
            object.__setattr__(self, "jump", (1,) * len(extent))
        if not self.offsets:
            object.__setattr__(self, "offsets", tuple(_offsets(e) for e in extent))
        offs = tuple(tuple(sorted(set(int(v) for v in o))) for o in self.offsets)
        object.__setattr__(self, "offsets", offs)
        if len(self.jump) != len(extent) or len(offs) != len(extent):
            raise ValueError("extent, jump and offsets need one entry per spatial axis")
        for e, o in zip(extent, offs, strict=True):
            if not o or o[0] != 0 or o[-1] != e - 1:
                raise ValueError(f"offsets {o} do not span extent {e}")

    # --- constructors -------------------------------------------------------------------------

    @classmethod
    def identity(cls, channels: int, rank: int = 2) -> Field:
        """The field of no op at all: (1, …, 1) and the identity matrix."""
        return cls((1,) * rank, np.eye(channels, dtype=bool))

    @classmethod
    def conv(
        cls,
        c_in: int,
        c_out: int,
        kernel_shape: Sequence[int],
        strides: Sequence[int] = (),
        dilations: Sequence[int] = (),
        group: int = 1,
    ) -> Field:
        """One conv ``[c_out, c_in // group, *kernel_shape]``; ONNX defaults for empty attrs."""
        rank = len(kernel_shape)
        strides = tuple(strides) or (1,) * rank
        dilations = tuple(dilations) or (1,) * rank
        offs = tuple(
            tuple(i * d for i in range(k)) for k, d in zip(kernel_shape, dilations, strict=True)
        )
        return cls(
            tuple(o[-1] + 1 for o in offs),
            group_connectivity(c_in, c_out, group),
            tuple(strides),
            offs,
        )

    @classmethod
    def permutation(cls, indices: Iterable[int], c_in: int, rank: int = 2) -> Field:
        """Output channel ``o`` reads input channel ``indices[o]`` (shuffle, Gather on axis 1)."""
        idx = np.asarray(list(indices), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= c_in):
            raise ValueError(f"channel indices out of range for {c_in} channels")
        return cls((1,) * rank, np.eye(c_in, dtype=bool)[idx])

    # --- composition --------------------------------------------------------------------------

    def then(self, after: Field) -> Field:
        """This chain followed by ``after`` (whose input is this chain's output)."""
        if after.c_in != self.c_out:
            raise ValueError(f"cannot chain: {self.c_out} channels into a field of {after.c_in}")
        if after.rank != self.rank:
            raise ValueError(f"cannot chain: spatial rank {self.rank} then {after.rank}")
        offsets = tuple(
            tuple(sorted({a + b * j for a in oa for b in ob}))
            for oa, ob, j in zip(self.offsets, after.offsets, self.jump, strict=True)
        )
        if _is_identity(self.connectivity):  # the first conv of a chain, or after a depthwise
            conn = after.connectivity.copy()
        elif _is_identity(after.connectivity):
            conn = self.connectivity.copy()
        else:
            conn = _bool_product(after.connectivity, self.connectivity)
        return Field(
            tuple(o[-1] + 1 for o in offsets),
            conn,
            tuple(a * b for a, b in zip(self.jump, after.jump, strict=True)),
            offsets,
        )

    def then_conv(
        self,
        c_out: int,
        kernel_shape: Sequence[int] | None = None,
        strides: Sequence[int] = (),
        dilations: Sequence[int] = (),
        group: int = 1,
    ) -> Field:
        """This chain followed by a conv reading its ``c_out`` channels (1×1 if no kernel)."""
        kernel_shape = tuple(kernel_shape) if kernel_shape else (1,) * self.rank
        if kernel_shape == (1,) * self.rank and not any(s != 1 for s in strides):
            # fast path (no spatial change): OR the rows of each input group, repeat per output
            c_in = self.c_out
            if group < 1 or c_in % group or c_out % group:
                raise ValueError(f"group {group} does not divide c_in {c_in} and c_out {c_out}")
            rows = self.connectivity.reshape(group, c_in // group, -1).any(axis=1)
            conn = np.repeat(rows, c_out // group, axis=0)
            return Field(self.extent, conn, self.jump, self.offsets)
        return self.then(Field.conv(self.c_out, c_out, kernel_shape, strides, dilations, group))

    def then_permutation(self, indices: Iterable[int]) -> Field:
        """This chain followed by output ``o`` ← channel ``indices[o]``."""
        idx = np.asarray(list(indices), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.c_out):
            raise ValueError(f"channel indices out of range for {self.c_out} channels")
        return Field(self.extent, self.connectivity[idx], self.jump, self.offsets)

    # --- the papers' numbers ------------------------------------------------------------------

    @property
    def rank(self) -> int:
        return len(self.extent)

    @property
    def c_out(self) -> int:
        return int(self.connectivity.shape[0])

    @property
    def c_in(self) -> int:
        return int(self.connectivity.shape[1])

    @cached_property
    def channels(self) -> int:
        """#channels of the papers' size: inputs reached by the least-connected output."""
        if self.c_out == 0:
            return 0
        return int(self.connectivity.sum(axis=1).min())

    @cached_property
    def size(self) -> tuple[int, ...]:
        """The papers' ``(kh, kw, #channels)`` vector."""
        return (*self.extent, self.channels)

    @property
    def full_channels(self) -> bool:
        """Every output depends on every input channel."""
        return bool(self.connectivity.all())

    @cached_property
    def key(self) -> FieldKey:
        """A hashable value that is equal for equal fields (for memoisation)."""
        return (
            self.connectivity.shape,
            np.packbits(self.connectivity).tobytes(),
            self.offsets,
            self.jump,
        )

    def covers(self, other: Field) -> bool:
        """Reads every input position and channel that ``other`` reads (same channel counts)."""
        if self.connectivity.shape != other.connectivity.shape or self.rank != other.rank:
            return False
        if np.any(other.connectivity & ~self.connectivity):
            return False
        return all(set(o) <= set(s) for s, o in zip(self.offsets, other.offsets, strict=True))

    def equals(self, other: Field) -> bool:
        """Reads exactly what ``other`` reads and steps through the input as it does."""
        return (
            self.connectivity.shape == other.connectivity.shape
            and bool(np.array_equal(self.connectivity, other.connectivity))
            and self.offsets == other.offsets
            and self.jump == other.jump
        )

    def __repr__(self) -> str:
        return (
            f"Field(size={self.size}, c_in={self.c_in}, c_out={self.c_out}, jump={self.jump}, "
            f"full_channels={self.full_channels})"
        )


def field_of_stages(
    stages: Sequence[Stage],
    kernel_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
) -> Field:
    """Field of a ``designs.Stage`` chain; spatial stages carry kernel, strides and dilations.

    A stage's ``shuffle > 1`` permutes its output with ``designs.shuffle_permutation``.
    """
    if not stages:
        raise ValueError("no stages")
    rank = len(kernel_shape)
    field = Field.identity(stages[0].c_in, rank)
    for stage in stages:
        if stage.c_in != field.c_out:
            raise ValueError(f"stage {stage} reads {stage.c_in} channels, chain has {field.c_out}")
        if stage.spatial:
            field = field.then_conv(
                stage.c_out, kernel_shape, strides or (), dilations or (), stage.group
            )
        else:
            field = field.then_conv(stage.c_out, None, (), (), stage.group)
        if stage.shuffle > 1:
            field = field.then_permutation(shuffle_permutation(stage.c_out, stage.shuffle))
    return field


def field_of_conv(spec: ConvSpec) -> Field:
    """Field of one ONNX Conv as read into a ConvSpec (groups included)."""
    return Field.conv(
        spec.c_in, spec.c_out, spec.kernel_shape, spec.strides, spec.dilations, spec.group
    )


def _is_identity(connectivity: np.ndarray) -> bool:
    """A square connectivity with exactly its diagonal set (composing with it changes nothing)."""
    n = connectivity.shape[0]
    return (
        connectivity.shape == (n, n)
        and bool(connectivity.diagonal().all())
        and int(np.count_nonzero(connectivity)) == n
    )


def _distinct_rows(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first index of each distinct row of boolean ``m``, which distinct row each row is)."""
    packed = np.ascontiguousarray(np.packbits(m, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def _bool_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a @ b) > 0`` for boolean matrices, computed once per distinct row of ``a`` and distinct
    column of ``b``: a grouped conv's connectivity has one distinct row (and column) per group,
    so a chain of wide grouped stages costs ``groups_a · c · groups_b`` work, not
    ``c_out · c · c_in``."""
    if 0 in a.shape or 0 in b.shape:
        return np.zeros((a.shape[0], b.shape[1]), dtype=bool)
    ra, ia = _distinct_rows(a)
    cb, ib = _distinct_rows(b.T)
    small = (a[ra].astype(np.float32) @ b[:, cb].astype(np.float32)) > 0
    return small[ia][:, ib]
