"""The edits widening will need, recorded by the channel rules as data (no graph access here).

- :class:`ConstEdit`: a constant resized along the axes that follow channels (:class:`AxisMap`):
  conv/Gemm/MatMul weights, biases, BN vectors, per-channel constants of Add/Mul/PRelu, ...;
- :class:`IntEdit`: an integer constant input or attribute recomputed from the new widths
  (depthwise ``group``, Reshape targets, Split sizes, Slice bounds, shuffle indices, Resize
  sizes); its values are plain ints, :class:`Count` (a width-derived integer) or :class:`Perm`
  (width-derived indices);
- :class:`ConvChannels`: which channel atoms a Conv reads and writes (what the widen pass
  re-plans per conv).

Atoms are the channel atoms of :class:`~onnx_sk.maths.channel_spaces.Spaces`; the edits are
resolved against final widths by :class:`~onnx_sk.width.analysis.ChannelAnalysis` and applied by
:func:`~onnx_sk.width.rewrite.run_widen`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AxisMap:
    """An axis of a constant that follows channels. ``role``: in (consumes), out (produces), channel."""

    atoms: tuple[int, ...]
    inner: int = 1
    role: str = "channel"
    groups: int = 1  # a grouped conv weight's axis 1 holds c_in / groups


@dataclass(frozen=True)
class ConstEdit:
    """Resize input ``input`` of node ``node`` (a constant) along ``axes``.

    New entries: ``fill == "he"`` draws He-normal weights (fan-in = the product of ``fan_in``
    axes of the new shape), zero where an ``in`` axis is new under function-preserving widening;
    a number fills per-channel constants (BN scale 1, bias 0, ...).
    """

    node: int
    input: int
    axes: tuple[tuple[int, AxisMap], ...]
    fill: str | float
    fan_in: tuple[int, ...] = ()


@dataclass(frozen=True)
class Count:
    """An integer computed from new widths: (total width of ``atoms``) · mult // div."""

    atoms: tuple[int, ...]
    mult: int = 1
    div: int = 1


@dataclass(frozen=True)
class Perm:
    """Shuffle permutation of the width of ``atoms`` with ``groups`` groups (1: a range), + offset."""

    atoms: tuple[int, ...]
    groups: int
    offset: Count | int = 0


#: one value of an :class:`IntEdit`: a literal, or computed from the new widths
IntValue = int | Count | Perm


@dataclass(frozen=True)
class IntEdit:
    """Recompute an int constant input (``input``) or an ``attr`` of node ``node``."""

    node: int
    values: tuple[IntValue, ...]
    input: int | None = None
    attr: str | None = None
    scalar: bool = False
    drop_attr: str | None = None


@dataclass(frozen=True)
class ConvChannels:
    """The channels of Conv node ``node`` (index in the main graph): atoms read and written."""

    node: int
    name: str
    in_atoms: tuple[int, ...]
    out_atoms: tuple[int, ...]
    group: int
    depthwise: bool
