"""The tensors of a model: every TensorProto (subgraphs included), and their size in bytes.

Sizes are read from dims and data types only, so nothing is serialised or converted: the decision
to write external data (``is_large``) costs nothing even for a multi-GB model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import onnx

#: stay well below protobuf's hard limit when deciding to write external data
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of the model: initializers and tensor attributes, subgraphs included."""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        yield from graph.initializer
        for node in graph.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t
                elif a.type == onnx.AttributeProto.TENSORS:
                    yield from a.tensors
                elif a.type == onnx.AttributeProto.GRAPH:
                    graphs.append(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(a.graphs)


def is_large(model: onnx.ModelProto, known: bool | None = None) -> bool:
    """Whether the model must go through external data (``known`` skips the estimate)."""
    return known if known is not None else tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's tensors from their dims and dtypes, without serialising anything."""
    total = 0
    for tensor in all_tensors(model):
        size = (
            onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            if tensor.data_type
            else 1
        )
        n = 1
        for d in tensor.dims:
            n *= d
        total += n * size
    return total


def with_outputs(
    model: onnx.ModelProto, names: Iterable[str], elem_types: Mapping[str, int] | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` that also gives the tensors ``names`` as graph outputs (each once; the
    type ``elem_types[name]``, float32 when not given); returns it and the names it added (those
    that were not graph outputs already)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    added = []
    for name in names:
        if name not in have:
            elem = (elem_types or {}).get(name) or onnx.TensorProto.FLOAT
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
            have.add(name)
            added.append(name)
    return probe, added
