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
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
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
    out: str | os.PathLike,
    inputs: Sequence[Path | None],
    overwrite_input: bool,
    input_data: Sequence[Path] = (),
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


class OutputFile:
    """A model written atomically: ``stage`` writes the temporary file(s) beside ``out``,
    ``commit`` renames them into place (the external-data file first, as a pair, with SIGINT and
    SIGTERM held back), and leaving the ``with`` block without a commit removes them.

    ``external_data``: True writes tensors ≥ 1 KiB to ``OUT.data`` beside ``OUT``; None decides
    by the model's size (protobuf's 2 GB limit).
    """

    def __init__(self, out: str | os.PathLike, external_data: bool | None = None) -> None:
        self.out = Path(out)
        self.external_data = external_data
        self.data_name = f"{self.out.name}.data"
        folder = self.out.parent
        self.tmp = folder / f".{self.out.name}.{secrets.token_hex(6)}.tmp"
        self.tmp_data = folder / f".{self.data_name}.{secrets.token_hex(6)}.tmp"  # no '..'
        self.staged = False
        self.wrote_data = False

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.staged or exc[0] is not None:
            self.discard()

    def stage(self, model: onnx.ModelProto) -> Path | None:
        """Write ``model`` to the temporary file(s). Returns the temporary model file when it can be
        read on its own, None when its tensors went to external data (which it names as the
        final ``OUT.data``, so it can only be read once committed)."""
        try:
            # inside the try: an interrupt right after leaves nothing
            self.tmp.touch(exist_ok=False)
            external = is_large(model) if self.external_data is None else self.external_data
            if external:
                external = _save_external(model, self.tmp, self.tmp_data, self.data_name)
            if not external:
                with open(self.tmp, "wb") as fh:
                    fh.write(model.SerializeToString())
                    fh.flush()
                    os.fsync(fh.fileno())
        except BaseException:
            self.discard()
            raise
        self.staged, self.wrote_data = True, external
        return None if external else self.tmp

    def copy_from(self, source: Path) -> None:
        """Stage a byte-for-byte copy of ``source`` (a model written unchanged)."""
        try:
            self.tmp.touch(exist_ok=False)
            shutil.copyfile(source, self.tmp)
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except BaseException:
            self.discard()
            raise
        self.staged, self.wrote_data = True, False

    def commit(self, model: onnx.ModelProto | None = None) -> Path:
        """Rename the staged file(s) into place (staging ``model`` first if nothing is staged)."""
        if not self.staged:
            assert model is not None, "nothing staged and no model to write"
            self.stage(model)
        try:
            with _signals_deferred():  # the data file and the model are renamed as a pair
                if self.wrote_data:
                    _default_mode(self.tmp_data)
                    os.replace(self.tmp_data, self.out.parent / self.data_name)
                _default_mode(self.tmp)
                os.replace(self.tmp, self.out)
                _fsync_folder(self.out.parent)
        except BaseException:
            self.discard()
            raise
        self.staged = False
        return self.out

    def discard(self) -> None:
        """Remove the temporary files (no-op for those already renamed or never written)."""
        for p in (self.tmp, self.tmp_data):
            with contextlib.suppress(OSError):
                p.unlink()
        self.staged = False


def save_model(
    model: onnx.ModelProto,
    out: str | os.PathLike,
    *,
    external_data: bool | None = None,
    before_rename: Callable[[Path | None], None] | None = None,
) -> Path:
    """Write ``model`` to ``out`` atomically; external data beside it when asked or needed.

    ``before_rename(tmp_path)`` runs on the complete temporary file (None when the tensors went
    to external data) before it becomes ``out``; if it raises, nothing is written.
    """
    with OutputFile(out, external_data) as output:
        path = output.stage(model)
        if before_rename is not None:
            before_rename(path)
        return output.commit()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
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
