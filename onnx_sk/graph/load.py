"""Load ONNX models safely.

``load_model`` accepts a path or a ``ModelProto``; reads external data relative to the model's
folder (refusing locations that escape it); turns every bad input into a one-line
:class:`~onnx_sk.errors.UserError`: missing, empty, truncated or non-model files, opsets outside
what ONNX Runtime and this onnx support, IR versions newer than this onnx knows, negative dims,
graph inputs with a dim fixed at 0, external data shorter than its tensor, and every model ONNX
calls invalid (:mod:`onnx_sk.graph.validity`). IR-3 models are upgraded to IR 4
(:func:`upgrade_ir3`); ``value_info`` entries that contradict the model's shapes (another type,
rank or fixed dim than shape inference derives without them) are dropped: they would mislead
shape inference and fail the full checker on the written model.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_model

from onnx_sk.errors import UserError
from onnx_sk.graph.constants import Canonical, canonical_constants, needs_canonical
from onnx_sk.graph.shapes import contradicting_value_info
from onnx_sk.graph.tensors import all_tensors
from onnx_sk.graph.validity import check_external_size, check_model

log = logging.getLogger(__name__)

#: the oldest default-domain opset accepted (the oldest ONNX Runtime supports)
OLDEST_OPSET = 7


@dataclass
class LoadedModel:
    """A model and where it came from."""

    model: onnx.ModelProto
    path: Path | None = None
    used_external_data: bool = False
    external_files: list[str] = field(default_factory=list)
    #: what the load changed to put constants in one form (graph/constants.py; falsy: nothing):
    #: the model computes what the file does but no longer matches it node for node
    canonical: Canonical = field(default_factory=Canonical)

    @property
    def data_paths(self) -> list[Path]:
        """The external data files the model was read from."""
        return [self.path.parent / f for f in self.external_files] if self.path else []


def _external_tensors(model: onnx.ModelProto) -> list[tuple[onnx.TensorProto, str]]:
    """(tensor, location) for every tensor stored as external data, subgraphs included."""
    out = []
    for tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            out.append((tensor, info.get("location", "")))
    return out


def _check_location(tensor: onnx.TensorProto, location: str, folder: Path) -> Path:
    name = tensor.name
    if "\0" in location:
        raise UserError(
            f"external data location {location!r} of tensor {name!r} contains a NUL byte: refused"
        )
    if not location:
        raise UserError(f"tensor {name!r} is stored as external data without a location")
    if os.path.isabs(location) or location.startswith(("/", "\\")):
        raise UserError(
            f"external data location {location!r} of tensor {name!r} is an absolute path: refused"
        )
    target = (folder / location).resolve()
    if folder.resolve() not in target.parents:
        raise UserError(
            f"external data location {location!r} of tensor {name!r} escapes the model's folder: refused"
        )
    if not target.is_file():
        raise UserError(
            f"external data file {location!r} of tensor {name!r} is missing (looked in {folder})"
        )
    check_external_size(tensor, location, str(target))
    return target


def _parse(path: Path) -> onnx.ModelProto:
    try:
        if not path.exists():
            raise UserError(f"{path}: no such file")
        if path.is_dir():
            raise UserError(f"{path} is a directory, not an ONNX model file")
        if path.stat().st_size == 0:
            raise UserError(f"{path} is empty (0 bytes), not an ONNX model")
        with open(path, "rb") as fh:
            data = fh.read()
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not an ONNX model file") from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception:
        raise UserError(
            f"{path} is not a valid ONNX model (protobuf parse failed: truncated, corrupt or not a model)"
        ) from None
    _check_is_model(model, str(path))
    return model


def _check_is_model(model: onnx.ModelProto, what: str) -> None:
    # protobuf parses many byte strings as a message with unknown fields; a real model has
    # an IR version, an opset and a graph with outputs.
    if model.ir_version <= 0 or not model.opset_import or not model.graph.output:
        raise UserError(
            f"{what} is not a valid ONNX model (no IR version, opset or graph outputs: "
            "truncated, corrupt or not a model)"
        )
    if model.ir_version > onnx.IR_VERSION:
        raise UserError(
            f"{what} has IR version {model.ir_version}, newer than this onnx "
            f"({onnx.__version__}) knows ({onnx.IR_VERSION})"
        )
    _check_opset(model, what)
    _check_dims(model, what)


def _check_opset(model: onnx.ModelProto, what: str) -> None:
    """The default domain's opset must be one ONNX Runtime supports and this onnx knows."""
    newest = onnx.defs.onnx_opset_version()
    for entry in model.opset_import:
        if entry.domain not in ("", "ai.onnx"):
            continue
        if entry.version < OLDEST_OPSET:
            raise UserError(
                f"{what} uses opset {entry.version} of the default ONNX domain; onnx-sk supports "
                f"opsets {OLDEST_OPSET} to {newest} (upgrade it with onnx.version_converter)"
            )
        if entry.version > newest:
            raise UserError(
                f"{what} uses opset {entry.version} of the default ONNX domain, newer than this "
                f"onnx ({onnx.__version__}) knows ({newest})"
            )


def _check_dims(model: onnx.ModelProto, what: str) -> None:
    """No negative dim in the main graph's declared shapes or in any tensor (headers only); no
    graph input with a dim fixed at 0 (a degenerate model: it runs only on empty tensors)."""
    g = model.graph
    for vi in (*g.input, *g.output, *g.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                raise UserError(
                    f"{what}: tensor {vi.name!r} has a negative dim ({d.dim_value}): "
                    "not a valid ONNX model"
                )
    inits = {i.name for i in g.initializer}
    for vi in g.input:
        dims = vi.type.tensor_type.shape.dim
        axis = next(
            (k for k, d in enumerate(dims) if d.HasField("dim_value") and d.dim_value == 0), None
        )
        if vi.name not in inits and axis is not None:
            shape = "x".join(
                str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in dims
            )
            raise UserError(
                f"{what}: input {vi.name!r} has dim {axis} fixed at 0 (shape {shape}): it takes "
                "only empty tensors, nothing to optimize or verify"
            )
    for tensor in all_tensors(model):
        if any(d < 0 for d in tensor.dims):
            raise UserError(
                f"{what}: tensor {tensor.name!r} has negative dims {list(tensor.dims)}: "
                "not a valid ONNX model"
            )


def load_model(source: str | os.PathLike[str] | onnx.ModelProto) -> LoadedModel:
    """Load a model from a path (external data read from its folder) or take a ``ModelProto``."""
    if isinstance(source, onnx.ModelProto):
        _check_is_model(source, "the model")
        used = bool(_external_tensors(source))
        if used:
            raise UserError(
                "the ModelProto references external data but has no folder to read it from: "
                "pass the model's path instead"
            )
        check_model(source, "the model")
        stale = contradicting_value_info(source)
        if source.ir_version < 4 or needs_canonical(source.graph) or stale:  # the caller's
            copy = onnx.ModelProto()  # proto is never edited: IR 3 upgraded, constants
            copy.CopyFrom(source)  # canonical, stale value_info dropped on a copy
            upgrade_ir3(copy)
            drop_value_info(copy, stale, "the model")
            return LoadedModel(model=copy, canonical=canonical_constants(copy))
        return LoadedModel(model=source)
    path = Path(source)
    model = _parse(path)
    locations = _external_tensors(model)
    files = []
    for tensor, location in locations:
        _check_location(tensor, location, path.parent)
        files.append(location)
    check_model(model, str(path))  # before the external data is read: the proto is small
    if locations:
        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise UserError(f"{path}: could not read external data ({exc})") from None
    changed = canonical_constants(upgrade_ir3(model))
    drop_value_info(model, contradicting_value_info(model), str(path))
    return LoadedModel(model, path, bool(locations), sorted(set(files)), changed)


def drop_value_info(model: onnx.ModelProto, names: list[str], what: str) -> None:
    """Drop the main graph's ``value_info`` entries of ``names`` (hints that contradict the
    model's shapes: :func:`~onnx_sk.graph.shapes.contradicting_value_info`) in place."""
    if not names:
        return
    gone = set(names)
    keep = [vi for vi in model.graph.value_info if vi.name not in gone]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    log.info("%s: value_info of %s contradicts the model's shapes: dropped", what, ", ".join(names))


def upgrade_ir3(model: onnx.ModelProto) -> onnx.ModelProto:
    """IR 3 lists every initializer as a graph input too (what opset 7-9 exporters wrote); from
    IR 4 on an initializer listed as an input is a default the caller may override. An IR-3
    model is upgraded in place to IR 4 with its initializers no longer listed as inputs, so its
    weights read as constants and what onnx-sk writes needs no feed for them."""
    if model.ir_version >= 4:
        return model
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    keep = [vi for vi in graph.input if vi.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)
    model.ir_version = 4
    return model
