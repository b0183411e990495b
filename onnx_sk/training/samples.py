"""Unlabelled input samples for distillation, and the checks every form of them passes.

A :class:`Samples` gives the samples at some indices as in-memory arrays (``take``), one array per
real graph input, first axis = samples. The forms (:mod:`onnx_sk.training.data` picks one):

- an ``.npz``, one array per input (key = input name): arrays stored uncompressed
  (``np.savez``) are memory-mapped straight out of the zip file, so only the batches in use are
  read; compressed members are decompressed a batch at a time (:mod:`onnx_sk.runtime.npz`);
- an iterable of ``{input name: array}`` dicts (one sample each, with or without the batch axis,
  or a batch), or ONNX Runtime's ``CalibrationDataReader`` (``get_next() -> dict | None``);
- a folder of images (:mod:`onnx_sk.training.images`).

Memory: what has to be copied (a compressed member, the items of an iterable) is held in memory
up to :data:`SAMPLE_BUDGET_BYTES` and, past it, written to a temporary file read back by rows
(:class:`RowFile`; deleted when the samples are freed).

Checked before any training (:func:`check_array`, :func:`check_finite`): dtype equal to the
model's, every fixed dim equal to the model's, no NaN/Inf (scanned in chunks).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.runtime.feeds import _NP_TYPES
from onnx_sk.runtime.npz import NpyHeader, NpzStream, npz_headers

#: samples (and bytes, at most) scanned per chunk when looking for NaN/Inf
_SCAN_CHUNK = 256
_SCAN_BYTES = 8 * 2**20
#: copied samples (compressed .npz members, iterable items, decoded images) kept in memory up to
#: this many bytes; past it they go to a memory-mapped temporary file (images: decoded again)
SAMPLE_BUDGET_BYTES = 256 * 2**20


class Samples:
    """Samples by input name: ``len`` of them, ``take(index)`` as in-memory arrays."""

    names: list[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The samples at ``index``, in that order, as in-memory arrays."""
        raise NotImplementedError


class ArraySamples(Samples):
    """Samples held as one array per input (each maybe memory-mapped)."""

    def __init__(self, arrays: dict[str, Any]) -> None:  # np.ndarray, np.memmap, Rows, RowFile
        self.arrays = arrays
        self.names = list(arrays)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v[index]) for k, v in self.arrays.items()}


#: in-memory samples are stored in blocks of about this many bytes (no final concatenation)
BLOCK_BYTES = 8 * 2**20


class Rows:
    """Samples in memory as blocks of rows, filled as they come: no final concatenation, so the
    memory is the samples plus at most one block (a growing array would copy, and the freed
    pieces of a concatenation stay in the allocator)."""

    def __init__(self, dtype: np.dtype, tail: tuple[int, ...]) -> None:
        self.dtype, self.tail = dtype, tail
        self.sample_bytes = max(int(np.prod(tail, dtype=np.int64)) * dtype.itemsize, 1)
        self.per_block = max(1, BLOCK_BYTES // self.sample_bytes)
        self.blocks: list[np.ndarray] = []
        self.count = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.count, *self.tail)

    @property
    def ndim(self) -> int:
        return 1 + len(self.tail)

    @property
    def nbytes(self) -> int:
        return self.count * self.sample_bytes

    def __len__(self) -> int:
        return self.count

    def append(self, a: np.ndarray) -> None:
        done = 0
        while done < len(a):
            at = self.count % self.per_block
            if at == 0:
                self.blocks.append(np.empty((self.per_block, *self.tail), self.dtype))
            k = min(len(a) - done, self.per_block - at)
            self.blocks[-1][at : at + k] = a[done : done + k]
            done += k
            self.count += k

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        rows = np.arange(self.count)[index]
        out = np.empty((len(rows), *self.tail), self.dtype)
        for k, i in enumerate(rows):
            out[k] = self.blocks[int(i) // self.per_block][int(i) % self.per_block]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def rows_bytes(self) -> Iterator[bytes]:
        for b, block in enumerate(self.blocks):
            n = min(self.per_block, self.count - b * self.per_block)
            yield block[:n].tobytes()


class Column:
    """One input's samples appended a chunk at a time: in memory (:class:`Rows`) up to
    ``budget`` bytes, then in a temporary file read back by rows (:class:`RowFile`)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.rows: Rows | None = None
        self.count = 0
        self.file: IO[bytes] | None = None
        self.shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None

    def append(self, a: np.ndarray) -> None:
        """Append samples ``a`` (first axis); the caller checked they share shape and dtype."""
        if self.shape is None:
            self.shape, self.dtype = tuple(a.shape[1:]), a.dtype
            self.rows = Rows(a.dtype, self.shape)
        self.count += len(a)
        if (
            self.file is None
            and self.rows is not None
            and self.rows.nbytes + a.nbytes > self.budget
        ):
            self.file = tempfile.NamedTemporaryFile(prefix="onnx-sk-samples-", delete=False)
            for chunk in self.rows.rows_bytes():
                self.file.write(chunk)
            self.rows = None
        if self.file is not None:
            self.file.write(np.ascontiguousarray(a).tobytes())
        else:
            assert self.rows is not None
            self.rows.append(a)

    def array(self) -> Rows | RowFile:
        assert self.shape is not None and self.dtype is not None
        if self.file is None:
            assert self.rows is not None
            return self.rows
        self.file.close()
        return RowFile(self.file.name, self.dtype, (self.count, *self.shape))


class RowFile:
    """Samples in a temporary file, read by rows (``os.pread``: no mapping, so reading them does
    not grow the resident set); the file is deleted when this object is freed."""

    def __init__(self, path: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, dtype, shape
        self.ndim = len(shape)
        self.row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        weakref.finalize(self, _remove, self.fd, path)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        rows = np.arange(len(self))[index]
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        for k, i in enumerate(rows):
            flat[k] = np.frombuffer(_pread(self.fd, self.row, int(i) * self.row), np.uint8)
        return out


def _pread(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # no pread (Windows): one reader at a time
    return os.read(fd, n)


def _remove(fd: int, path: str) -> None:
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)


def _stored_offset(path: Path, info: zipfile.ZipInfo, header_len: int) -> int:
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        local = raw.read(30)
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len + header_len


def _streamed(path: Path, h: NpyHeader, where: str, budget: int) -> Any:
    """A compressed (or Fortran-ordered) member, decompressed a batch at a time into a Column."""
    if not h.shape or h.shape[0] == 0:
        with zipfile.ZipFile(path) as zf, zf.open(h.member) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    col = Column(budget)
    step = max(1, min(h.shape[0], (8 * 2**20) // max(h.sample_bytes, 1)))
    with NpzStream(path, [h], where) as stream:
        for (part,) in stream.batches(step, h.shape[0]):
            col.append(part)
    return col.array()


def read_npz(path: str | os.PathLike, flag: str = "--data") -> dict[str, Any]:
    """Each member of an .npz: memory-mapped when stored uncompressed, else streamed into
    memory (up to the budget) or a temporary mapped file."""
    p = Path(path)
    where = f"{flag} {p}"
    headers = npz_headers(p, flag)
    out: dict[str, Any] = {}
    try:
        with zipfile.ZipFile(p) as zf:
            infos = {i.filename: i for i in zf.infolist()}
        budget = SAMPLE_BUDGET_BYTES // max(len(headers), 1)
        for name, h in headers.items():
            info = infos[h.member]
            if info.compress_type == zipfile.ZIP_STORED and not h.fortran_order and h.shape[:1]:
                if h.shape[0]:
                    offset = _stored_offset(p, info, h.offset)
                    out[name] = np.memmap(p, dtype=h.dtype, mode="r", offset=offset, shape=h.shape)
                    continue
            out[name] = _streamed(p, h, where, budget)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{where}: not a readable .npz file ({type(exc).__name__})") from None
    return out


def model_dims(vi: onnx.ValueInfoProto) -> list[int | None] | None:
    """The input's dims (None where symbolic), or None when it declares no shape."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def check_input(vi: onnx.ValueInfoProto) -> np.dtype:
    """What distill can feed this input: a known element type, a free batch or one fixed at 1;
    returns its numpy dtype."""
    want = _NP_TYPES.get(vi.type.tensor_type.elem_type)
    if want is None:
        raise UserError(
            f"input {vi.name!r} has an element type onnx-sk cannot feed "
            f"({vi.type.tensor_type.elem_type})"
        )
    dims = model_dims(vi)
    if dims and dims[0] is not None and dims[0] != 1:
        raise UserError(
            f"input {vi.name!r} has its batch fixed at {dims[0]}: distill feeds a free batch or "
            "a batch fixed at 1"
        )
    return np.dtype(want)


def check_array(where: str, vi: onnx.ValueInfoProto, a: np.ndarray) -> None:
    """``a`` (first axis = samples) has the input's dtype and every fixed dim but the batch."""
    want = check_input(vi)
    if a.dtype != want:
        raise UserError(f"{where}: array {vi.name!r} is {a.dtype}, the model's input is {want}")
    dims = model_dims(vi)
    if dims is None:
        return
    shape = "x".join(map(str, a.shape))
    model_shape = "x".join("?" if d is None else str(d) for d in dims)
    if a.ndim != len(dims) or any(
        d is not None and d != s for d, s in zip(dims[1:], a.shape[1:], strict=True)
    ):
        raise UserError(
            f"{where}: array {vi.name!r} has shape {shape}; the model's input is {model_shape} "
            "(first axis = samples)"
        )


def check_finite(where: str, name: str, a: np.ndarray) -> None:
    if not np.issubdtype(a.dtype, np.floating):
        return
    per = max(int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize, 1)
    step = max(1, min(_SCAN_CHUNK, _SCAN_BYTES // per))
    for i in range(0, len(a), step):
        if not np.isfinite(a[i : i + step]).all():
            raise UserError(f"{where}: array {name!r} holds NaN or Inf values")


def one_sample(vi: onnx.ValueInfoProto, value: Any) -> np.ndarray:
    """An item's array with the samples axis: added when it has one dim fewer than the input."""
    a = np.asarray(value)
    dims = model_dims(vi)
    if dims and a.ndim == len(dims) - 1:
        a = a[None]
    return a


def stack(
    items: Iterable[Mapping[str, np.ndarray]] | Any, inputs: list[onnx.ValueInfoProto]
) -> dict[str, Any]:
    """An iterable of input dicts (or a CalibrationDataReader), each checked as it comes, into
    one Column per input (errors say "data: item K")."""
    if hasattr(items, "get_next"):
        reader = items
        items = iter(lambda: reader.get_next(), None)
    elif isinstance(items, Mapping) or not isinstance(items, Iterable):
        raise UserError(
            f"data: expected a path, an iterable of {{input name: array}} dicts or a "
            f"CalibrationDataReader (got a {type(items).__name__})"
        )
    cols = {vi.name: Column(SAMPLE_BUDGET_BYTES // max(len(inputs), 1)) for vi in inputs}
    for k, item in enumerate(items):
        where = f"data: item {k}"
        if not isinstance(item, Mapping):
            raise UserError(f"{where} is a {type(item).__name__}, not a dict {{input name: array}}")
        for vi in inputs:
            if vi.name not in item:
                raise UserError(
                    f"{where} has no array for input {vi.name!r} "
                    f"(it has {', '.join(map(str, item)) or 'none'})"
                )
            a = one_sample(vi, item[vi.name])
            check_array(where, vi, a)
            col = cols[vi.name]
            if col.shape is not None and tuple(a.shape[1:]) != col.shape:
                raise UserError(
                    f"{where}: array {vi.name!r} has shape {'x'.join(map(str, a.shape))}, the "
                    f"items before it {'x'.join(map(str, ('N', *col.shape)))}"
                )
            check_finite(where, vi.name, a)
            col.append(a)
    return {k: c.array() for k, c in cols.items() if c.count}
