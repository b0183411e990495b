"""An ``.npz`` read without loading it: each array's declared shape and dtype from its header,
then its samples (rows of the first axis) streamed a batch at a time.

``np.load`` reads a whole array at once, and a small compressed file may declare gigabytes
(zeros compress about 1000:1). Here the zip directory and every ``.npy`` header are read first
(:func:`npz_headers`: nothing of the data), the declared size is checked against the bytes the
member holds, and :class:`NpzStream` reads samples ``[i, i + k)`` of several arrays in lockstep,
sequentially, so memory holds one batch. Arrays of Python objects are refused (pickles are never
loaded). A Fortran-ordered array cannot be read by rows: it is read whole when it fits the
caller's budget, else refused.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np
from numpy.lib import format as npy

from onnx_sk.errors import UserError


@dataclass(frozen=True)
class NpyHeader:
    """One array of an ``.npz``: name, declared shape and dtype, where its data starts."""

    name: str
    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def sample_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize


def gib(n: float) -> str:
    """A byte count for a message: GiB, MiB or bytes."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{int(n)} bytes"


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> NpyHeader:
    name = info.filename[: -len(".npy")]
    with zf.open(info) as fh:
        version = npy.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(fh)
        else:
            raise UserError(
                f"{where}: array {name!r} is .npy format {version}: expected 1.0 or 2.0"
            )
        offset = fh.tell()
    if dtype.hasobject:
        raise UserError(f"{where}: array {name!r} holds Python objects (pickles are never loaded)")
    h = NpyHeader(name, info.filename, tuple(int(d) for d in shape), dtype, fortran, offset)
    held = info.file_size - offset
    if held < h.nbytes:
        raise UserError(
            f"{where}: array {name!r} declares shape {'x'.join(map(str, h.shape)) or '()'} "
            f"({h.nbytes} bytes) but the file holds {max(held, 0)}"
        )
    return h


def npz_headers(path: str | os.PathLike, flag: str) -> dict[str, NpyHeader]:
    """Every array's header, by name, in file order; no data is read."""
    p = Path(path)
    where = f"{flag} {p}"
    if not p.is_file():
        raise UserError(f"{where}: no such file")
    try:
        with zipfile.ZipFile(p) as zf:
            infos = [i for i in zf.infolist() if i.filename.endswith(".npy")]
            return {h.name: h for h in (_header(zf, i, where) for i in infos)}
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{where}: not a readable .npz file ({type(exc).__name__})") from None


class NpzStream:
    """Samples of some arrays of one ``.npz``, read in lockstep, a batch at a time."""

    def __init__(self, path: str | os.PathLike, headers: list[NpyHeader], where: str) -> None:
        self.path, self.headers, self.where = Path(path), headers, where
        self._zf: zipfile.ZipFile | None = None
        self._files: list[IO[bytes]] = []
        self._whole: dict[str, np.ndarray] = {}
        self._next = 0

    def __enter__(self) -> NpzStream:
        try:
            self._zf = zipfile.ZipFile(self.path)
            for h in self.headers:
                fh = self._zf.open(h.member)
                self._files.append(fh)
                fh.read(h.offset)  # past the header
                if h.fortran_order:  # not readable by rows: whole (the caller checked the size)
                    data = fh.read(h.nbytes)
                    self._whole[h.name] = np.frombuffer(data, h.dtype).reshape(h.shape, order="F")
        except Exception as exc:
            self.__exit__(None, None, None)
            raise UserError(
                f"{self.where}: not a readable .npz file ({type(exc).__name__})"
            ) from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for fh in self._files:
            fh.close()
        if self._zf is not None:
            self._zf.close()

    def read(self, count: int) -> list[np.ndarray]:
        """The next ``count`` samples of every array (a fresh, writable array each)."""
        start, out = self._next, []
        for h, fh in zip(self.headers, self._files, strict=True):
            if h.name in self._whole:
                out.append(np.ascontiguousarray(self._whole[h.name][start : start + count]))
                continue
            want = count * h.sample_bytes
            try:
                data = fh.read(want)
            except Exception as exc:  # a corrupt member (bad CRC, truncated deflate stream)
                raise UserError(
                    f"{self.where}: array {h.name!r} is not readable ({type(exc).__name__})"
                ) from None
            if len(data) < want:
                raise UserError(f"{self.where}: array {h.name!r} ends before its declared size")
            out.append(np.frombuffer(data, h.dtype).reshape(count, *h.shape[1:]).copy())
        self._next += count
        return out

    def batches(self, size: int, total: int) -> Iterator[list[np.ndarray]]:
        """Batches of ``size`` samples (the last one smaller) until ``total`` samples are read."""
        done = 0
        while done < total:
            k = min(size, total - done)
            yield self.read(k)
            done += k
