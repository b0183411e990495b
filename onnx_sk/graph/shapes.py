"""Static shapes of a model's tensors, with user overrides for its inputs.

``--input-shape NAME:1x3x224x224`` (or ``NAME:1,3,224,224``, ``NAME:[1,3,224,224]``) fixes a
graph input's dims; ONNX shape inference then runs on
a light copy of the model (large tensors keep their dims but drop their data), so it is fast and
works for models above protobuf's 2 GB limit. A dim that stays symbolic is ``None`` here, and
everything that depends on it (MACs) is reported as unknown, never guessed.

One symbolic dim is not a guess: the channel dim (axis 1) of a graph input that Convs of the main
graph read as ``X``. Each such Conv with a constant weight ``W`` [c_out, c_in // group, *k] fixes
it at ``c_in = W.shape[1] · group``; where they all agree, that is the input's channel count
(:func:`implied_channels`), used to count and to make the verification input.
"""

from __future__ import annotations

import onnx

from onnx_sk.errors import UserError

Shape = tuple[int | None, ...]
#: refuse input shapes whose single tensor would exceed this many elements
MAX_ELEMENTS = 2**34


def known_dims(shape: Shape | None) -> tuple[int, ...] | None:
    """``shape`` when every dim of it is known, else None."""
    if shape is None:
        return None
    dims = tuple(d for d in shape if d is not None)
    return dims if len(dims) == len(shape) else None


#: what ``--input-shape`` accepts, for the messages
SHAPE_FORMS = "NAME:1x3x224x224, NAME:1,3,224,224 or NAME:[1,3,224,224]"


def parse_dims(text: str) -> tuple[int, ...] | None:
    """``1x3x224x224``, ``1,3,224,224`` or ``[1,3,224,224]`` (spaces allowed) → the dims; None
    when the text is none of these (empty dims, a mix of separators, unbalanced brackets, a dim
    that is not an integer)."""
    body = text.strip()
    if body.startswith("[") or body.endswith("]"):
        if not (body.startswith("[") and body.endswith("]")):
            return None
        body = body[1:-1]
    if "," in body and "x" in body.lower():
        return None
    parts = body.split(",") if "," in body else body.lower().split("x")
    try:
        return tuple(int(p.strip()) for p in parts)
    except ValueError:
        return None


def parse_input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``["x:1x3x224x224"]`` (or ``x:1,3,224,224``, ``x:[1,3,224,224]``) →
    ``{"x": (1, 3, 224, 224)}``; bare dims (``1x3x224x224``) name ``""``, the only input."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, _, dims = item.rpartition(":")
        shape = parse_dims(dims)
        if shape is None:
            raise UserError(f"--input-shape {item!r}: expected {SHAPE_FORMS}")
        if any(d <= 0 for d in shape):
            raise UserError(f"--input-shape {item!r}: every dim must be a positive integer")
        count = 1
        for d in shape:
            count *= d
        if count > MAX_ELEMENTS:
            raise UserError(f"--input-shape {item!r}: {count} elements is absurdly large: refused")
        if name in out:
            raise UserError(f"--input-shape {item!r}: {name or 'the input'} is given twice")
        out[name] = shape
    return out


def per_sample_inputs(
    model: onnx.ModelProto, given: dict[str, tuple[int, ...]] | None = None
) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """The input shapes to count MACs at: ``given``, plus batch 1 for every other input whose
    only symbolic dim is the first (the batch axis of nearly every export), a symbolic channel
    dim taken from the Convs that read it (:func:`implied_channels`). Returns the shapes
    and the names of the inputs set to batch 1 (counts are then *per sample*). With shapes
    given, the other inputs take the batch of the first one given (their batch must agree)."""
    out = dict(given or {})
    batch = next((dims[0] for dims in out.values() if dims), 1)
    inits = {i.name for i in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in inits]
    named = set(out) | ({real[0].name} if "" in out and len(real) == 1 else set())
    per_sample = []
    implied = implied_channels(model)
    for vi in real:
        if vi.name in named or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = input_dims(vi, implied)
        rest = known_dims(dims[1:]) if dims else None
        if dims and rest is not None and (dims[0] is None or vi.name in implied):
            out[vi.name] = (batch if dims[0] is None else dims[0], *rest)
            if dims[0] is None:
                per_sample.append(vi.name)
    return out, per_sample if batch == 1 else []


def symbolic_inputs(model: onnx.ModelProto, given: dict[str, tuple[int, ...]]) -> list[str]:
    """``--input-shape`` examples for the inputs that still have a symbolic non-batch dim (their
    MACs and latency need one), e.g. ``"x:1x3x224x224"`` with each symbolic dim shown as 224 and
    a symbolic batch as 1."""
    inits = {i.name for i in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in inits]
    named = set(given) | ({real[0].name} if "" in given and len(real) == 1 else set())
    out = []
    implied = implied_channels(model)
    for vi in real:
        dims = input_dims(vi, implied) if vi.name not in named else None
        if dims and any(d is None for d in dims[1:]):
            example = [1 if d is None else d for d in dims[:1]]
            example += [224 if d is None else d for d in dims[1:]]
            out.append(f"{vi.name}:{'x'.join(str(d) for d in example)}")
    return out


def implied_channels(model: onnx.ModelProto) -> dict[str, int]:
    """The channel count of each graph input whose dim 1 is symbolic and that Convs of the main
    graph read as ``X`` with an initializer weight ``W`` [c_out, c_in // group, *k] of the
    input's rank: ``c_in = W.shape[1] · group``, when every such Conv agrees."""
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    ranks = {}
    for vi in model.graph.input:
        dims = _dims(vi)
        if vi.name not in weights and dims is not None and len(dims) >= 3 and dims[1] is None:
            ranks[vi.name] = len(dims)
    seen: dict[str, set[int]] = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        rank, w = ranks.get(node.input[0]), weights.get(node.input[1])
        if rank is None or w is None or len(w) != rank:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        seen.setdefault(node.input[0], set()).add(w[1] * max(group, 1))
    return {name: next(iter(c)) for name, c in seen.items() if len(c) == 1 and min(c) > 0}


def input_dims(vi: onnx.ValueInfoProto, implied: dict[str, int]) -> Shape | None:
    """A graph input's declared dims (``None`` for a symbolic one), with the channel dim the
    Convs reading it imply (``implied``: :func:`implied_channels`)."""
    dims = _dims(vi)
    if dims is None or vi.name not in implied:
        return dims
    return (dims[0], implied[vi.name], *dims[2:])


def light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the data of large initializers (dims kept): enough for shape inference."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL or _numel(init) > 64:
            stub = graph.initializer.add()
            stub.name, stub.data_type = init.name, init.data_type
            stub.dims.extend(init.dims)
        else:
            graph.initializer.add().CopyFrom(init)
    return light


def contradicting_value_info(model: onnx.ModelProto) -> list[str]:
    """The main graph's ``value_info`` entries that contradict what shape inference derives
    without them: another element type, another rank or another fixed dim. Such an entry is a
    stale hint (ONNX Runtime runs the model), but it misleads inference and fails the full
    checker on anything written from the model."""
    if not model.graph.value_info:
        return []
    light = light_copy(model)
    del light.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:
        return []
    g = inferred.graph
    derived = {vi.name: vi.type.tensor_type for vi in (*g.value_info, *g.output)}
    out = []
    for vi in model.graph.value_info:
        want, got = derived.get(vi.name), vi.type.tensor_type
        if want is not None and vi.type.HasField("tensor_type") and _contradicts(got, want):
            out.append(vi.name)
    return out


def _contradicts(a: onnx.TypeProto.Tensor, b: onnx.TypeProto.Tensor) -> bool:
    if a.elem_type and b.elem_type and a.elem_type != b.elem_type:
        return True
    if not (a.HasField("shape") and b.HasField("shape")):
        return False
    if len(a.shape.dim) != len(b.shape.dim):
        return True
    return any(
        x.HasField("dim_value") and y.HasField("dim_value") and x.dim_value != y.dim_value
        for x, y in zip(a.shape.dim, b.shape.dim, strict=True)
    )


def _numel(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n


def apply_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    """Fix graph input dims in place (the model must be a copy the caller owns)."""
    inits = {i.name for i in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in inits]
    for name, dims in shapes.items():
        if name == "" and len(real_inputs) == 1:
            name = real_inputs[0].name
        match = [i for i in real_inputs if i.name == name]
        if not match:
            known = ", ".join(i.name for i in real_inputs) or "none"
            raise UserError(
                f"--input-shape names {name!r}, which is not a graph input (inputs: {known})"
            )
        tensor_type = match[0].type.tensor_type
        if not tensor_type.HasField("shape"):  # unknown rank: the given shape says it
            tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in dims)
        if len(tensor_type.shape.dim) != len(dims):
            raise UserError(
                f"--input-shape {name}: rank {len(dims)} does not match the input's rank "
                f"{len(tensor_type.shape.dim)}"
            )
        for dim, value in zip(tensor_type.shape.dim, dims, strict=True):
            if dim.HasField("dim_value") and dim.dim_value != value:
                raise UserError(
                    f"--input-shape {name}: dim {value} contradicts the model's fixed dim {dim.dim_value}"
                )
            dim.Clear()
            dim.dim_value = value


def _dims(value_info: onnx.ValueInfoProto) -> Shape | None:
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in t.tensor_type.shape.dim
    )


def infer_shapes(
    model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> dict[str, Shape]:
    """Every tensor's shape that ONNX shape inference can tell (``None`` for symbolic dims), a
    symbolic channel dim of an input taken from the Convs that read it."""
    light = light_copy(model)
    apply_input_shapes(light, input_shapes or {})
    implied = implied_channels(light)
    for vi in light.graph.input:
        if vi.name in implied:
            dim = vi.type.tensor_type.shape.dim[1]
            dim.Clear()
            dim.dim_value = implied[vi.name]
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:
        inferred = light
    out: dict[str, Shape] = {}
    for init in model.graph.initializer:
        out[init.name] = tuple(init.dims)
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = _dims(vi)
        if dims is not None:
            out[vi.name] = dims
    return out
