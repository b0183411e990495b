"""One index of a graph, built once: producers, consumers, constants and free names.

Every module that needs to know who writes or reads a tensor, what a constant holds, or which
names are taken asks a :class:`GraphIndex` instead of scanning the graph itself.

- **constants** (:class:`ConstantIndex`): initializers *and* ``Constant`` node outputs (``value``,
  ``value_float(s)``, ``value_int(s)``), dtype kept; converted to numpy only when asked, so
  indexing a multi-GB model costs no memory. ``dims``/``dtype`` read the TensorProto header.
- **producer / consumers**: the node writing a tensor and the nodes reading it, in graph order
  (node positions, so ``graph.node[i]`` is the node); ``readers`` counts node inputs,
  ``uses`` adds the graph outputs.
- **names** (:class:`NameAllocator`): every node and tensor name of the graph; ``fresh(name)``
  returns ``name`` or ``name_2``, ``name_3``, … whichever is free, and takes it.

The index describes the graph when it was built: code that edits the graph keeps its own index
up to date or builds a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

#: the attributes of a ``Constant`` node that onnx-sk reads as a numeric constant
CONSTANT_VALUE_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The numeric value of a ``Constant`` node (dtype kept), or None for other kinds of value."""
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None


def _is_numeric_constant(node: onnx.NodeProto) -> bool:
    return (
        node.op_type == "Constant"
        and bool(node.output)
        and any(a.name in CONSTANT_VALUE_ATTRS for a in node.attribute)
    )


class ConstantIndex:
    """The constants of one or more graphs by name, converted to numpy only when asked.

    An initializer that is also listed as a graph input is a default the caller may override
    (IR >= 4; :func:`onnx_sk.graph.load.load_model` upgrades IR-3 models, which list every
    initializer as an input): not a constant, unless ``include_inputs`` (parameter counts)."""

    #: arrays above this many bytes are not cached (a second copy of a multi-GB model's weights)
    CACHE_LIMIT = 16 * 2**20

    def __init__(self, *graphs: onnx.GraphProto, include_inputs: bool = False) -> None:
        self._protos: dict[str, onnx.TensorProto | onnx.NodeProto] = {}
        self._cache: dict[str, np.ndarray] = {}
        for graph in graphs:
            inputs = set() if include_inputs else {i.name for i in graph.input}
            for init in graph.initializer:
                if init.name not in inputs:
                    self._protos[init.name] = init
            for node in graph.node:
                if _is_numeric_constant(node):
                    self._protos[node.output[0]] = node

    def __contains__(self, name: object) -> bool:
        return name in self._protos

    def __iter__(self) -> Iterator[str]:
        return iter(self._protos)

    def __len__(self) -> int:
        return len(self._protos)

    def get(self, name: str) -> np.ndarray | None:
        """The value of constant ``name`` (None when it is not a constant)."""
        proto = self._protos.get(name)
        if proto is None:
            return None
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        if isinstance(proto, onnx.TensorProto):
            value: np.ndarray | None = numpy_helper.to_array(proto)
        else:
            value = constant_node_value(proto)
        if value is None:
            return None
        if value.nbytes <= self.CACHE_LIMIT:  # a big kernel is converted per use, never kept
            self._cache[name] = value
        return value

    def dims(self, name: str) -> tuple[int, ...] | None:
        """The shape of constant ``name`` (read off the header of an initializer)."""
        proto = self._protos.get(name)
        if isinstance(proto, onnx.TensorProto):
            return tuple(proto.dims)
        value = self.get(name)
        return None if value is None else tuple(value.shape)

    def dtype(self, name: str) -> np.dtype | None:
        """The numpy dtype of constant ``name`` (read off the header of an initializer)."""
        proto = self._protos.get(name)
        if isinstance(proto, onnx.TensorProto):
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(proto.data_type))
        value = self.get(name)
        return None if value is None else value.dtype

    def size(self, name: str) -> int:
        """The number of elements of constant ``name`` (0 when it is not a constant)."""
        dims = self.dims(name)
        return 0 if dims is None else int(np.prod(dims, dtype=np.int64))


class NameAllocator:
    """Deterministic, collision-free names: ``fresh(name)`` is ``name`` or ``name_2``, ``name_3``…"""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self.taken = set(taken)

    def __contains__(self, name: object) -> bool:
        return name in self.taken

    def fresh(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self.taken:
            k += 1
            candidate = f"{name}_{k}"
        self.taken.add(candidate)
        return candidate


def graph_names(graph: onnx.GraphProto) -> set[str]:
    """Every node and tensor name of a graph and of the graphs nested in it (new names must
    avoid them: a subgraph may not define a name its outer graph defines), value_info included
    (an entry whose tensor is gone would give a new tensor of that name its type and shape)."""
    names = {n.name for n in graph.node}
    names |= {t for n in graph.node for t in (*n.input, *n.output)}
    names |= {i.name for i in graph.initializer} | {v.name for v in (*graph.input, *graph.output)}
    names |= {v.name for v in graph.value_info}
    for node in graph.node:
        for sub in subgraphs(node):
            names |= graph_names(sub)
    return names


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held in a node's attributes (If branches, Loop/Scan bodies)."""
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def training_bound(model: onnx.ModelProto) -> set[str]:
    """The tensors the model's ``training_info`` reads or updates (its algorithm and
    initialization graphs read the inference graph's initializers by name; ``update_binding``
    writes new values into them): a rewrite must leave them as they are."""
    names: set[str] = set()
    for info in model.training_info:
        for graph in (info.initialization, info.algorithm):
            names |= {t for n in graph.node for t in n.input} | subgraph_reads(graph)
        for binding in (*info.initialization_binding, *info.update_binding):
            names |= {binding.key, binding.value}
    return names


def subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name read inside the subgraphs of ``graph``'s nodes (outer-scope reads)."""
    return set().union(*(node_subgraph_reads(node) for node in graph.node))


def node_subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor name read inside the subgraphs of ``node`` (an If branch reads the tensors
    of the graph around it by name, not as inputs of the If)."""
    reads: set[str] = set()
    for sub in subgraphs(node):
        reads |= {t for n in sub.node for t in n.input} | subgraph_reads(sub)
    return reads


class GraphIndex:
    """Producers, consumers, constants and names of ``graph`` (``outer``: enclosing graphs whose
    constants a subgraph may read)."""

    def __init__(self, graph: onnx.GraphProto, outer: Iterable[onnx.GraphProto] = ()) -> None:
        self.graph = graph
        self.constants = ConstantIndex(*outer, graph)
        self._producer: dict[str, int] = {}
        self._consumers: dict[str, list[int]] = {}
        for i, node in enumerate(graph.node):
            for o in node.output:
                if o:
                    self._producer[o] = i
            for t in node.input:
                if t:
                    self._consumers.setdefault(t, []).append(i)
        self.outputs = frozenset(o.name for o in graph.output)
        self._names: NameAllocator | None = None

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        i = self._producer.get(tensor)
        return None if i is None else self.graph.node[i]

    def consumers(self, tensor: str) -> list[onnx.NodeProto]:
        return [self.graph.node[i] for i in self._consumers.get(tensor, ())]

    def consumer_positions(self, tensor: str) -> list[int]:
        return list(self._consumers.get(tensor, ()))

    def readers(self, tensor: str) -> int:
        """How many node inputs read ``tensor`` (a node reading it twice counts twice)."""
        return len(self._consumers.get(tensor, ()))

    def uses(self, tensor: str) -> int:
        """Node inputs reading ``tensor``, plus one if it is a graph output."""
        return self.readers(tensor) + (tensor in self.outputs)

    @property
    def names(self) -> NameAllocator:
        """Every name of the graph, taken; built on first use."""
        if self._names is None:
            self._names = NameAllocator(graph_names(self.graph))
        return self._names
