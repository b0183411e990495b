"""ConvSpec: what one ONNX ``Conv`` node is, read once, with ONNX's own attribute names.

Defaults follow the ONNX ``Conv`` operator verbatim: ``group=1``, ``strides`` and ``dilations``
all ones, ``pads`` all zeros (``[x1_begin, x2_begin, ..., x1_end, x2_end]``), ``auto_pad="NOTSET"``.
A weight has shape ``[c_out, c_in // group, kh, kw]``.

Kinds (for 2-D convs):

- ``dense``: ``group == 1`` and a kernel larger than 1×1 (the convs the SK scheme replaces);
- ``pointwise``: ``group == 1`` and a 1×1 kernel;
- ``depthwise``: ``group == c_in == c_out > 1``;
- ``grouped``: any other ``group > 1``.

This module imports numpy and the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

DENSE = "dense"
POINTWISE = "pointwise"
DEPTHWISE = "depthwise"
GROUPED = "grouped"


@dataclass(frozen=True)
class ConvSpec:
    """A 2-D (or N-D) convolution's geometry. ``kernel_shape`` has one entry per spatial axis."""

    c_in: int
    c_out: int
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    group: int = 1
    auto_pad: str = "NOTSET"
    has_bias: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        n = len(self.kernel_shape)
        if not self.strides:
            object.__setattr__(self, "strides", (1,) * n)
        if not self.dilations:
            object.__setattr__(self, "dilations", (1,) * n)
        if not self.pads:
            object.__setattr__(self, "pads", (0,) * (2 * n))
        if self.c_in % self.group or self.c_out % self.group:
            raise ValueError(
                f"conv {self.name!r}: group {self.group} does not divide c_in {self.c_in} "
                f"and c_out {self.c_out}"
            )

    @property
    def spatial_rank(self) -> int:
        return len(self.kernel_shape)

    @property
    def kernel_area(self) -> int:
        area = 1
        for k in self.kernel_shape:
            area *= k
        return area

    @property
    def kind(self) -> str:
        if self.group == 1:
            return POINTWISE if self.kernel_area == 1 else DENSE
        if self.group == self.c_in == self.c_out:
            return DEPTHWISE
        return GROUPED

    @property
    def weight_params(self) -> int:
        # [c_out, c_in // group, kh, kw]
        return self.c_out * (self.c_in // self.group) * self.kernel_area

    @property
    def params(self) -> int:
        return self.weight_params + (self.c_out if self.has_bias else 0)

    @property
    def info_field(self) -> tuple[int, ...]:
        """(kh, kw, c_in / group): the papers' size of the information field of this conv."""
        return (*self.effective_kernel, self.c_in // self.group)

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        """Spatial extent covered by the kernel, dilation included: d·(k−1)+1 per axis."""
        return tuple(
            d * (k - 1) + 1 for k, d in zip(self.kernel_shape, self.dilations, strict=True)
        )

    def macs(self, out_spatial: tuple[int, ...]) -> int:
        """Multiply-accumulates for one image at the given output spatial size."""
        pixels = 1
        for d in out_spatial:
            pixels *= d
        return self.weight_params * pixels
