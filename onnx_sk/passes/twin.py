"""DenseTwinPass: run the dense twin before the rewrite, as the reference of verification.

The twin is the model with every replaced conv's kernel swapped for its SK design's
dense-equivalent kernel (:mod:`onnx_sk.graph.twin`); its outputs on seeded random input are what
the optimized model must reproduce (:class:`~onnx_sk.passes.verify.VerifyPass`), and the
fingerprint of the graph outside the replaced convs (``ctx.twin_structure``). Skipped with
``--no-verify`` or when nothing is replaced. Changes nothing in the model.

Memory: when the model is still the unmodified file it came from, ONNX Runtime loads that file
with the twin kernels as initializer overrides, and this pass lets go of the Python copy of the
weights meanwhile (the plan that refers into it included) and reads the file again afterwards,
so the peak holds one copy of the model, not two. Otherwise the kernels are swapped in place
and restored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import onnx

from onnx_sk.graph.build import Replacement
from onnx_sk.graph.checks import replaced_conv, structure
from onnx_sk.graph.load import load_model
from onnx_sk.graph.shapes import light_copy
from onnx_sk.graph.twin import overrides, swapped_kernels
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext
from onnx_sk.runtime.session import release_memory
from onnx_sk.runtime.verify import reference_outputs


def _structure_of_original(
    model: onnx.ModelProto, path: Path | None, replaced: list[Replacement]
) -> Callable[[], Counter[str]]:
    """The fingerprint of the graph outside the replaced convs, as a function: read from the
    unmodified input file when there is one (only a verification that needs it pays for it),
    else taken now."""
    skip = replaced_conv(replaced)
    if path is not None:
        return lambda: _file_structure(path, skip)
    now = structure(model.graph, skip)
    return lambda: now


def _file_structure(path: Path, skip: Callable[[onnx.NodeProto], bool]) -> Counter[str]:
    original = load_model(path).model
    assert original is not None
    return structure(original.graph, skip)


class DenseTwinPass:
    name = "dense-twin"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        replaced = ctx.replacements
        if not ctx.options.verify or not replaced:
            return PassResult(model, modified=False)
        seed, shapes = ctx.options.seed, ctx.input_shapes or None
        # the file takes the twin kernels as initializer overrides while no pass changed the
        # model and every weight is an initializer of the file by the same name (Identity nodes
        # the load bypassed do not matter: ``overrides`` wants a kernel read by one conv only)
        path = ctx.source.path if not ctx.modified and not ctx.source.canonical.folded else None
        ctx.twin_structure = _structure_of_original(model, path, replaced)
        kernels = overrides(model, replaced) if path is not None else None
        if path is None or kernels is None:
            with swapped_kernels(model, replaced):
                ctx.twin = reference_outputs(model, seed, shapes)
            return PassResult(model, modified=False)
        light = light_copy(model)  # the graph without its weights: enough to make the feeds
        ctx.forget_plan()
        del ctx.source.model  # the Python copy of the weights goes (read again below)
        del model
        release_memory()
        ctx.twin = reference_outputs(light, seed, shapes, path=path, overrides=kernels)
        del kernels, light
        ctx.source.model = load_model(path).model
        return PassResult(ctx.source.model, modified=False)
