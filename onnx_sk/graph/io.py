"""Load and save ONNX models safely.

- ``load_model`` accepts a path or a ``ModelProto``; reads external data relative to the model's
  folder (refusing locations that escape it); turns every bad input into a one-line
  :class:`UserError`.
- ``constant_values`` resolves weights stored as initializers *or* as ``Constant`` nodes, with
  their dtype kept.
- ``save_model`` writes atomically (temporary file in the target folder, fsync, rename), never
  over the input unless asked, and with external data when the input used it or the model would
  pass protobuf's 2 GB limit.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_sk.errors import UserError

#: stay well below protobuf's hard limit when deciding to write external data
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
#: the oldest default-domain opset accepted (the oldest ONNX Runtime supports)
OLDEST_OPSET = 7


@dataclass
class LoadedModel:
    """A model and where it came from."""

    model: onnx.ModelProto
    path: Path | None = None
    used_external_data: bool = False
    external_files: list[str] = field(default_factory=list)

    @property
    def data_paths(self) -> list[Path]:
        """The external data files the model was read from."""
        return [self.path.parent / f for f in self.external_files] if self.path else []


def _external_locations(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(tensor name, location) for every tensor stored as external data, subgraphs included."""
    out = []
    for tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            out.append((tensor.name, info.get("location", "")))
    return out


def all_tensors(model: onnx.ModelProto):
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


def _check_location(name: str, location: str, folder: Path) -> Path:
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
    """No negative dim in the main graph's declared shapes or in any tensor (headers only)."""
    g = model.graph
    for vi in (*g.input, *g.output, *g.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                raise UserError(
                    f"{what}: tensor {vi.name!r} has a negative dim ({d.dim_value}): "
                    "not a valid ONNX model"
                )
    for tensor in all_tensors(model):
        if any(d < 0 for d in tensor.dims):
            raise UserError(
                f"{what}: tensor {tensor.name!r} has negative dims {list(tensor.dims)}: "
                "not a valid ONNX model"
            )


def load_model(source: str | os.PathLike | onnx.ModelProto) -> LoadedModel:
    """Load a model from a path (external data read from its folder) or take a ``ModelProto``."""
    if isinstance(source, onnx.ModelProto):
        _check_is_model(source, "the model")
        used = bool(_external_locations(source))
        if used:
            raise UserError(
                "the ModelProto references external data but has no folder to read it from: "
                "pass the model's path instead"
            )
        return LoadedModel(model=source)
    path = Path(source)
    model = _parse(path)
    locations = _external_locations(model)
    files = []
    for name, location in locations:
        _check_location(name, location, path.parent)
        files.append(location)
    if locations:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise UserError(f"{path}: could not read external data ({exc})") from None
    return LoadedModel(model, path, bool(locations), sorted(set(files)))


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every constant tensor of a graph: initializers and ``Constant`` node outputs (dtype kept)."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = _constant_node_value(node)
            if value is not None:
                values[node.output[0]] = value
    return values


class ConstantIndex:
    """The constants of a graph by name, converted to numpy only when asked (dtype kept).

    Unlike :func:`constant_values` this copies nothing up front, so indexing a multi-GB model
    costs no memory; ``dims``/``dtype`` read the TensorProto header only.
    """

    #: arrays above this many bytes are not cached (a second copy of a multi-GB model's weights)
    CACHE_LIMIT = 16 * 2**20

    def __init__(self, *graphs: onnx.GraphProto) -> None:
        self._protos: dict[str, onnx.TensorProto | onnx.NodeProto] = {}
        self._cache: dict[str, np.ndarray] = {}
        for graph in graphs:
            for init in graph.initializer:
                self._protos[init.name] = init
            for node in graph.node:
                if node.op_type == "Constant" and node.output:
                    self._protos[node.output[0]] = node

    def __contains__(self, name: str) -> bool:
        return name in self._protos

    def get(self, name: str) -> np.ndarray | None:
        if name not in self._protos:
            return None
        if name not in self._cache:
            proto = self._protos[name]
            value = (
                numpy_helper.to_array(proto)
                if isinstance(proto, onnx.TensorProto)
                else _constant_node_value(proto)
            )
            if value is None:
                return None
            if value.nbytes > self.CACHE_LIMIT:  # a big kernel is converted per use, never kept
                return value
            self._cache[name] = value
        return self._cache[name]

    def dims(self, name: str) -> tuple[int, ...] | None:
        proto = self._protos.get(name)
        if isinstance(proto, onnx.TensorProto):
            return tuple(proto.dims)
        value = self.get(name)
        return None if value is None else tuple(value.shape)


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
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


def is_large(model: onnx.ModelProto, known: bool | None = None) -> bool:
    """Whether the model must go through external data (``known`` skips the estimate)."""
    return known if known is not None else tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's tensors from their dims and dtypes, without serialising anything."""
    total = 0
    for tensor in all_tensors(model):
        size = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize if tensor.data_type else 1
        n = 1
        for d in tensor.dims:
            n *= d
        total += n * size
    return total


def _default_mode(path: Path) -> None:
    """mkstemp makes 0600 files; give the output the mode a plain open() would (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output_path(
    out: str | os.PathLike, inputs: list[Path], overwrite_input: bool, input_data: list[Path] = ()
) -> Path:
    """Refuse an output in a missing folder, over an input unless asked, or whose external data
    file (``OUT.data``) would overwrite an input's external data (``input_data``)."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"output path {out} is a directory")
    if not out.parent.exists():
        raise UserError(f"output folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"output folder {out.parent} is not writable")
    for src in inputs:
        if src is not None and _same_file(src, out) and not overwrite_input:
            raise UserError(
                f"output path {out} is the input model: refusing to overwrite it "
                "(pass --overwrite to allow)"
            )
    replaces_input = any(src is not None and _same_file(src, out) for src in inputs)
    for data in input_data:
        for target in (out, out.parent / f"{out.name}.data"):
            if _same_file(data, target) and not (target != out and replaces_input):
                raise UserError(
                    f"output path {out} would overwrite {target.name}, the input model's "
                    "external data: refused (choose another output name)"
                )
    return out


def save_model(
    model: onnx.ModelProto,
    out: str | os.PathLike,
    *,
    external_data: bool | None = None,
    before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``model`` to ``out`` atomically; external data beside it when asked or needed.

    ``before_rename(tmp_path)`` runs on the complete temporary file (without external data)
    before it becomes ``out``; if it raises, nothing is written.
    """
    out = Path(out)
    folder = out.parent
    if external_data is None:
        external_data = is_large(model)
    data_name = f"{out.name}.data"
    tmp_data = folder / f".{data_name}.{secrets.token_hex(6)}.tmp"  # no '..' in the name
    tmp = folder / f".{out.name}.{secrets.token_hex(6)}.tmp"
    try:
        tmp.touch(exist_ok=False)  # inside the try: an interrupt right after leaves nothing
        if external_data:
            external_data = _save_external(model, tmp, tmp_data, data_name)
        if not external_data:
            with open(tmp, "wb") as fh:
                fh.write(model.SerializeToString())
                fh.flush()
                os.fsync(fh.fileno())
            if before_rename is not None:
                before_rename(tmp)
        elif before_rename is not None:
            before_rename(None)
        with _signals_deferred():  # the data file and the model are renamed as a pair
            if external_data:
                _default_mode(tmp_data)
                os.replace(tmp_data, folder / data_name)
            _default_mode(tmp)
            os.replace(tmp, out)
            _fsync_folder(folder)
    except BaseException:
        for p in (tmp, tmp_data):
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    return out


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT/SIGTERM held back (delivered on exit) while a few renames must happen together."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):  # not POSIX
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable (POSIX; a no-op where a folder cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_external(model: onnx.ModelProto, tmp: Path, tmp_data: Path, data_name: str) -> bool:
    """Write tensors ≥ 1 KiB to ``tmp_data`` and the graph (pointing at ``data_name``) to ``tmp``.

    Returns False (nothing written) when no tensor is large enough to go to external data.
    """
    from onnx.external_data_helper import (
        convert_model_to_external_data,
        write_external_data_tensors,
    )

    model = _copy(model)
    convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location=tmp_data.name, size_threshold=1024
    )
    model = write_external_data_tensors(model, str(tmp_data.parent))
    if not tmp_data.exists():
        return False
    for tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = data_name
    with open(tmp_data, "rb+") as fh:
        os.fsync(fh.fileno())
    with open(tmp, "wb") as fh:
        fh.write(model.SerializeToString())
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def save_json(doc: object, out: str | os.PathLike) -> Path:
    """Write a JSON document atomically."""
    import json

    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2, default=json_default)
            fh.flush()
            os.fsync(fh.fileno())
        _default_mode(Path(tmp))
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out


def json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
