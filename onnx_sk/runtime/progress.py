"""The progress callback the library reports long work through: ``progress(fraction, what)``,
``fraction`` in [0, 1]. The library never draws anything; the command line draws a bar on stderr
(``onnx_sk.cli``), the Python API passes a callback or None."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]
