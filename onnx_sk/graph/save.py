"""Write models and JSON documents atomically.

``save_model`` writes a temporary file in the target folder, fsyncs it, renames it into place and
fsyncs the folder (SIGINT/SIGTERM held back between the external-data and model renames), with
external data (``OUT.data``) when the input used it or the model would pass protobuf's 2 GB
limit. Where it writes: :mod:`onnx_sk.graph.output_path` (a symlink's target; a special file
refused). A failed write (disk full, I/O error) is one ``UserError`` and leaves no temporary
file. Temporary files are named ``.OUT.<hex>.tmp`` (and ``.OUT.data.<hex>.tmp``) and hold an
exclusive ``flock`` while they live, so the next write to the same ``OUT`` removes those a
killed run (SIGKILL, the OOM killer) left behind, never those of a run still writing (nor any
younger than ``STALE_AFTER_S``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import convert_model_to_external_data, write_external_data_tensors

from onnx_sk.errors import UserError
from onnx_sk.graph.output_path import resolve_output
from onnx_sk.graph.tensors import all_tensors, is_large

#: a temporary file younger than this is never removed as stale (its writer creates it, then
#: locks it: a moment's window)
STALE_AFTER_S = 5.0

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover  (Windows: no lock, no stale clean-up)
    fcntl = None  # type: ignore[assignment]


def _default_mode(path: Path) -> None:
    """mkstemp makes 0600 files; give the output the mode a plain open() would (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


class OutputFile:
    """A model written atomically: ``stage`` writes the temporary file(s) beside ``out``,
    ``commit`` renames them into place (the external-data file first, as a pair, with SIGINT and
    SIGTERM held back), and leaving the ``with`` block without a commit removes them.

    ``external_data``: True writes tensors ≥ 1 KiB to ``OUT.data`` beside ``OUT``; None decides
    by the model's size (protobuf's 2 GB limit).
    """

    def __init__(self, out: str | os.PathLike, external_data: bool | None = None) -> None:
        self.out = resolve_output(out)
        self.external_data = external_data
        self.data_name = f"{self.out.name}.data"
        folder = self.out.parent
        token = secrets.token_hex(6)
        self.tmp = folder / f".{self.out.name}.{token}.tmp"
        self.tmp_data = folder / f".{self.data_name}.{token}.tmp"  # no '..'
        self.staged = False
        self.wrote_data = False
        self._lock: int | None = None  # an fd holding flock on self.tmp while it lives

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.staged or exc[0] is not None:
            self.discard()

    def stage(self, model: onnx.ModelProto) -> Path | None:
        """Write ``model`` to the temporary file(s). Returns the temporary model file when it can be
        read on its own, None when its tensors went to external data (which it names as the
        final ``OUT.data``, so it can only be read once committed)."""
        with self._staging():  # an interrupt right after creating it leaves nothing
            external = is_large(model) if self.external_data is None else self.external_data
            if external:
                external = _save_external(model, self.tmp, self.tmp_data, self.data_name)
            if not external:
                _write_synced(self.tmp, model.SerializeToString())
        self.staged, self.wrote_data = True, external
        return None if external else self.tmp

    def stage_bytes(self, data: bytes) -> Path:
        """Write ``data`` to the temporary file (a JSON document)."""
        with self._staging():
            _write_synced(self.tmp, data)
        self.staged, self.wrote_data = True, False
        return self.tmp

    def copy_from(self, source: Path) -> None:
        """Stage a byte-for-byte copy of ``source`` (a model written unchanged)."""
        with self._staging():
            shutil.copyfile(source, self.tmp)
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        self.staged, self.wrote_data = True, False

    @contextlib.contextmanager
    def _staging(self) -> Iterator[None]:
        """Create the temporary file for the block to fill; any failure removes what was written
        (a write error, e.g. a full disk, as one line naming OUT)."""
        try:
            self._create()
            yield
        except OSError as exc:
            self.discard()
            raise write_failed(self.out, exc) from None
        except BaseException:
            self.discard()
            raise

    def _create(self) -> None:
        """Remove the temporary files killed runs left for this ``OUT``, then create ours, locked
        for its whole life (the lock is what tells a live run's file from a stale one)."""
        remove_stale_temporaries(self.out)
        self._lock = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        if fcntl is not None:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

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
        except OSError as exc:
            self.discard()
            raise write_failed(self.out, exc) from None
        except BaseException:
            self.discard()
            raise
        self.staged = False
        self._unlock()
        return self.out

    def discard(self) -> None:
        """Remove the temporary files (no-op for those already renamed or never written)."""
        for p in (self.tmp, self.tmp_data):
            with contextlib.suppress(OSError):
                p.unlink()
        self.staged = False
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock)
            self._lock = None


def write_failed(out: Path, exc: OSError) -> UserError:
    """A write that failed (disk full, I/O error, quota) as one line; nothing was left behind."""
    why = exc.strerror or type(exc).__name__
    return UserError(f"cannot write {out}: {why} (nothing written)")


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove the ``.OUT.<hex>.tmp`` (and ``.OUT.data.<hex>.tmp``) files beside ``out`` whose
    writer is gone: no process holds their lock. Returns what was removed."""
    if fcntl is None:
        return []
    folder, name = out.parent, out.name
    model_tmp = re.compile(rf"\.{re.escape(name)}\.([0-9a-f]{{12}})\.tmp")
    data_tmp = re.compile(rf"\.{re.escape(name)}\.data\.([0-9a-f]{{12}})\.tmp")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    live = set()
    for entry in names:
        m = model_tmp.fullmatch(entry)
        if m is None:
            continue
        if _in_use(folder / entry):
            live.add(m.group(1))
        elif _unlink(folder / entry):
            removed.append(folder / entry)
    for entry in names:
        m = data_tmp.fullmatch(entry)
        if (
            m is not None
            and m.group(1) not in live
            and not (folder / f".{name}.{m.group(1)}.tmp").exists()
        ):
            if _unlink(folder / entry):
                removed.append(folder / entry)
    return removed


def _in_use(path: Path) -> bool:
    """Whether a live process holds the lock of this temporary file (a non-regular file counts
    as in use: never ours to remove)."""
    assert fcntl is not None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return True
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or time.time() - st.st_mtime < STALE_AFTER_S:
            return True  # not ours, or so new its writer may not hold the lock yet
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except OSError:
        return False


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


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


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
    _write_synced(tmp, model.SerializeToString())
    return True


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def save_json(doc: object, out: str | os.PathLike, what: str = "output path") -> Path:
    """Write a JSON document atomically (through a symlink; never over a special file)."""
    text = json.dumps(doc, indent=2, default=json_default).encode()
    with OutputFile(resolve_output(out, what)) as output:
        output.stage_bytes(text)
        return output.commit()


def json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
