"""The pass contract and the runner.

A pass is an object with a ``name`` and a method ``run(model, ctx) -> PassResult``: it reads the
options and what earlier passes left in the :class:`~onnx_sk.passes.context.PassContext`, and
returns the model (the same object, edited in place, or a new one) and whether it changed it.
Passes that only decide (plan, fit targets, initial weights) return the model unchanged.

``run_passes`` runs a list of passes in order. It holds no reference to the model while a pass
runs, so a pass may let go of it (the dense-twin pass does, to run ONNX Runtime from the file
with a single copy of the weights in memory). When a pass fails:

- with bad input (:data:`~onnx_sk.errors.BAD_INPUT`: a user error, a failed verification), the
  error goes to the user unchanged (its one-line message is the product), with ``failed_pass``
  and ``passes_before`` set on it;
- with anything else (a bug), a :class:`PassError` names the pass and the passes that ran
  before it, chained to the original exception.

The verify pass stages the output file it checks (``ctx.output``), and that file is what gets
written: a pass that changes the model after it is a :class:`PassError` (put it before verify).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import onnx

from onnx_sk.errors import BAD_INPUT
from onnx_sk.passes.context import PassContext


@dataclass(frozen=True)
class PassResult:
    """What a pass returns: the model after it, and whether the pass changed it."""

    model: onnx.ModelProto
    modified: bool


class Pass(Protocol):
    """One step of a pipeline (one class per file in ``onnx_sk/passes/``)."""

    name: str

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult: ...


class PassError(RuntimeError):
    """A pass failed with an unexpected error (a bug in onnx-sk, not bad input)."""


def run_passes(passes: Sequence[Pass], model: onnx.ModelProto, ctx: PassContext) -> onnx.ModelProto:
    """Run ``passes`` in order on ``model``; returns the final model.

    ``ctx.passes_run`` lists the passes that completed and ``ctx.modified`` whether any changed
    the model. Each pass's start is reported to the progress callback (``ctx.stage``), and a
    pass reports its own steps with ``ctx.step``.
    """
    holder = [model]
    del model  # from here on only ``holder`` refers to the model: a pass may drop it
    for p in passes:
        ctx.stage = p.name
        ctx.step(0.0)
        try:
            result = p.run(holder.pop(), ctx)
        except BAD_INPUT as exc:
            exc.failed_pass = p.name  # type: ignore[union-attr]
            exc.passes_before = tuple(ctx.passes_run)  # type: ignore[union-attr]
            raise
        except Exception as exc:
            before = ", ".join(ctx.passes_run) or "none"
            raise PassError(
                f"pass {p.name!r} failed (passes run before it: {before}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if result.modified and ctx.output is not None and ctx.output.staged:
            raise PassError(
                f"pass {p.name!r} changed the model after it was written out and verified: "
                "a pass that changes the model runs before 'verify'"
            )
        holder.append(result.model)
        ctx.modified = ctx.modified or result.modified
        ctx.passes_run.append(p.name)
        del result  # the next pass may drop the model: keep no second reference here
    return holder[0]
