"""Write models and JSON documents atomically.

``save_model`` writes a temporary file in the target folder, fsyncs it, renames it into place and
fsyncs the folder (SIGINT/SIGTERM held back between the external-data and model renames), with
external data (``OUT.data``) when the input used it or the model would pass protobuf's 2 GB
limit. ``check_output_path`` refuses, before anything is computed, an output in a missing or
read-only folder, over the input (unless asked), or over the input's external data.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import convert_model_to_external_data, write_external_data_tensors

from onnx_sk.errors import UserError
from onnx_sk.graph.tensors import all_tensors, is_large


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
