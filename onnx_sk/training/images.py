"""A folder of images (or of any files, with ``--preprocess``) as input samples, decoded lazily.

The folder is walked recursively in sorted order; hidden files (``.name``) are skipped. Without
``--preprocess`` every other file must be an image (:data:`IMAGE_EXTENSIONS`), and the model must
have one rank-4 input (NCHW or NHWC, 1 or 3 channels). Each image, with Pillow:

    x = resize(convert(image, "RGB" or "L"), (W, H), bilinear)        # [H, W, 3] or [H, W]
    x = x[..., ::-1] for bgr;  x repeated to C channels for grayscale
    x = (x · scale − mean[c]) / std[c]                                 # float32
    transposed to [1, C, H, W] (nchw) or kept [1, H, W, C] (nhwc)

(:class:`ImageSpec`; defaults: ``H, W`` the model's static dims, scale 1/255, mean 0, std 1,
rgb, the layout from the input's shape, grayscale for a 1-channel input). With ``--preprocess
MODULE:FUNCTION`` the function is called on each file's path and returns ``{input name: array}``
(one sample, with or without the samples axis) or one array for a single-input model.

Every file is decoded once before training (:func:`folder_samples`: unreadable files, shapes,
dtypes and NaN/Inf are refused up front, naming the file); decoded samples are kept in memory up
to ``SAMPLE_BUDGET_BYTES`` and the rest decoded again whenever a batch needs them.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.options import DataOptions
from onnx_sk.training import samples as store
from onnx_sk.training.samples import (
    Samples,
    check_array,
    check_finite,
    check_input,
    model_dims,
    one_sample,
)

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
)  # fmt: skip

_IMAGE_FLAGS = ("size", "scale", "mean", "std", "channel_order", "layout", "grayscale")


def given(opts: DataOptions) -> list[str]:
    """The image/preprocess flags set to something other than their default."""
    default = DataOptions()
    names = [*_IMAGE_FLAGS, "preprocess"]
    return [f"--{n.replace('_', '-')}" for n in names if getattr(opts, n) != getattr(default, n)]


def _number(value: Any, flag: str) -> float:
    try:
        x = float(Fraction(str(value).strip())) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError, TypeError):
        raise UserError(f"{flag} {value}: expected a number (e.g. 0.5 or 1/255)") from None
    if not math.isfinite(x):
        raise UserError(f"{flag} {value}: expected a finite number")
    return x


def _numbers(value: Any, flag: str) -> list[float]:
    """One value or a comma-separated list (or a sequence, from the API)."""
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple, np.ndarray)):
        parts = [parts]
    if len(parts) == 0:
        raise UserError(f"{flag}: expected one value or one per channel")
    return [_number(p, flag) for p in parts]


def parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = str(value).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--size {value}: expected HxW with positive integers (e.g. 224x224)")
    return int(parts[0]), int(parts[1])


def validate(opts: DataOptions) -> None:
    """The data options' syntax, before any work."""
    parse_size(opts.size)
    if opts.scale is not None and not _number(opts.scale, "--scale") > 0:
        raise UserError(f"--scale {opts.scale}: must be positive")
    if opts.mean is not None:
        _numbers(opts.mean, "--mean")
    if opts.std is not None and not all(s > 0 for s in _numbers(opts.std, "--std")):
        raise UserError(f"--std {opts.std}: every value must be positive")
    if opts.channel_order not in ("rgb", "bgr"):
        raise UserError(f"--channel-order {opts.channel_order!r}: expected rgb or bgr")
    if opts.layout not in (None, "nchw", "nhwc"):
        raise UserError(f"--layout {opts.layout!r}: expected nchw or nhwc")
    if opts.preprocess is not None:
        if ":" not in opts.preprocess or not all(opts.preprocess.rsplit(":", 1)):
            raise UserError(f"--preprocess {opts.preprocess}: expected MODULE:FUNCTION")
        image = [f for f in given(opts) if f != "--preprocess"]
        if image:
            raise UserError(f"--preprocess replaces the image options: drop {', '.join(image)}")


@dataclass(frozen=True)
class ImageSpec:
    """How one image becomes one sample (see the module docstring)."""

    height: int
    width: int
    channels: int
    nhwc: bool
    bgr: bool
    grayscale: bool
    scale: float
    mean: np.ndarray  # [channels] float32
    std: np.ndarray  # [channels] float32
    dtype: np.dtype


def image_spec(vi: onnx.ValueInfoProto, opts: DataOptions, where: str) -> ImageSpec:
    """The spec for input ``vi`` from the options, the rest from its shape."""
    dtype = check_input(vi)
    dims = model_dims(vi)
    if dims is None or len(dims) != 4:
        shape = "no shape" if dims is None else "x".join("?" if d is None else str(d) for d in dims)
        raise UserError(
            f"{where}: input {vi.name!r} ({shape}) is not a rank-4 image input: use --preprocess"
        )
    if not np.issubdtype(dtype, np.floating):
        raise UserError(
            f"{where}: input {vi.name!r} is {dtype}, images give floats: use --preprocess"
        )
    layout = opts.layout
    if layout is None:
        layout = "nhwc" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "nchw"
    c, h, w = (dims[3], dims[1], dims[2]) if layout == "nhwc" else (dims[1], dims[2], dims[3])
    channels = c if c is not None else (1 if opts.grayscale else 3)
    if channels not in (1, 3):
        raise UserError(
            f"{where}: input {vi.name!r} takes {channels} channels ({layout}); images give 1 or "
            "3: use --preprocess"
        )
    size = parse_size(opts.size)
    if size is not None:
        for d, s, what in ((h, size[0], "height"), (w, size[1], "width")):
            if d is not None and d != s:
                raise UserError(f"--size {opts.size}: the model's input {vi.name!r} has {what} {d}")
        h, w = size
    if h is None or w is None:
        raise UserError(f"{where}: input {vi.name!r} has a free height or width: give --size HxW")
    mean = _numbers(opts.mean, "--mean") if opts.mean is not None else [0.0]
    std = _numbers(opts.std, "--std") if opts.std is not None else [1.0]
    for values, flag in ((mean, "--mean"), (std, "--std")):
        if len(values) not in (1, channels):
            raise UserError(
                f"{flag}: {len(values)} values for {channels} channels (give 1 or {channels})"
            )
    return ImageSpec(
        height=h,
        width=w,
        channels=channels,
        nhwc=layout == "nhwc",
        bgr=opts.channel_order == "bgr",
        grayscale=opts.grayscale or channels == 1,
        scale=_number(opts.scale, "--scale") if opts.scale is not None else 1 / 255,
        mean=np.broadcast_to(np.asarray(mean, dtype=np.float32), (channels,)).copy(),
        std=np.broadcast_to(np.asarray(std, dtype=np.float32), (channels,)).copy(),
        dtype=dtype,
    )


def _pillow() -> ModuleType:  # PIL.Image (Pillow is optional, in the torch extra)
    try:
        from PIL import Image
    except ImportError:
        raise UserError("a folder of images needs Pillow: pip install 'onnx-sk[torch]'") from None
    return Image


def decode(path: Path, spec: ImageSpec, where: str) -> np.ndarray:
    """One image as one sample: ``[1, C, H, W]`` or ``[1, H, W, C]`` in the spec's dtype."""
    image_mod = _pillow()
    try:
        with image_mod.open(path) as im:
            im = im.convert("L" if spec.grayscale else "RGB")
            im = im.resize((spec.width, spec.height), image_mod.Resampling.BILINEAR)
            x = np.asarray(im, dtype=np.float32)
    except Exception as exc:
        raise UserError(f"{where}: not a readable image ({type(exc).__name__})") from None
    if x.ndim == 2:
        x = np.repeat(x[..., None], spec.channels, axis=2)
    elif spec.bgr:
        x = x[..., ::-1]
    x = (x * np.float32(spec.scale) - spec.mean) / spec.std  # [H, W, C]
    if not spec.nhwc:
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=spec.dtype)


def load_function(spec: str) -> Callable[[str], Any]:
    """``MODULE:FUNCTION`` (imported, the working folder first on the path) or
    ``FILE.py:FUNCTION``."""
    module_name, _, name = spec.rpartition(":")
    try:
        if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
            file = Path(module_name)
            if not file.is_file():
                raise UserError(f"--preprocess {spec}: no such file {module_name}")
            loader = importlib.util.spec_from_file_location(file.stem, file)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            sys.path.insert(0, str(Path.cwd()))
            try:
                module = importlib.import_module(module_name)
            finally:
                sys.path.remove(str(Path.cwd()))
    except UserError:
        raise
    except BaseException as exc:  # a module that fails on import (SystemExit included)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UserError(
            f"--preprocess {spec}: cannot import {module_name} ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        ) from None
    fn = getattr(module, name, None)
    if fn is None:
        raise UserError(f"--preprocess {spec}: {module_name} has no {name!r}")
    if not callable(fn):
        raise UserError(f"--preprocess {spec}: {name!r} is not callable")
    return fn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def preprocessed(
    fn: Callable[[str], Any], spec: str, path: Path, inputs: list[onnx.ValueInfoProto], where: str
) -> dict[str, np.ndarray]:
    """``fn(path)`` as one sample per input, or a one-line error naming what was wrong."""
    try:
        got = fn(str(path))
    except Exception as exc:
        raise UserError(
            f"--preprocess {spec} failed on {where}: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if isinstance(got, np.ndarray) and len(inputs) == 1:
        got = {inputs[0].name: got}
    if not isinstance(got, dict):
        what = "an array" if isinstance(got, np.ndarray) else f"a {type(got).__name__}"
        expected = "{input name: array}" + (" or an array" if len(inputs) == 1 else "")
        raise UserError(f"--preprocess {spec} returned {what} for {where}: expected {expected}")
    out = {}
    for vi in inputs:
        if vi.name not in got:
            raise UserError(
                f"--preprocess {spec} returned no array for input {vi.name!r} for {where} "
                f"(it has {', '.join(map(str, got)) or 'none'})"
            )
        a = one_sample(vi, got[vi.name])
        if a.ndim and len(a) != 1:
            raise UserError(
                f"--preprocess {spec} returned {len(a)} samples of {vi.name!r} for {where}: "
                "expected one"
            )
        out[vi.name] = a
    return out


class FileSamples(Samples):
    """One sample per file, made by ``make(path)``; kept once made while the budget lasts."""

    def __init__(
        self, files: list[Path], make: Callable[[Path], dict[str, np.ndarray]], names: list[str]
    ) -> None:
        self.files, self.make, self.names = files, make, names
        self.cache: dict[int, dict[str, np.ndarray]] = {}
        self.cached_bytes = 0

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, i: int) -> dict[str, np.ndarray]:
        if i in self.cache:
            return self.cache[i]
        got = self.make(self.files[i])
        size = sum(a.nbytes for a in got.values())
        if self.cached_bytes + size <= store.SAMPLE_BUDGET_BYTES:
            self.cache[i] = got
            self.cached_bytes += size
        return got

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        parts = [self.sample(int(i)) for i in index]
        return {k: np.concatenate([p[k] for p in parts]) for k in self.names}


def _files(folder: Path, images: bool, where: str) -> list[Path]:
    files = sorted(
        p
        for p in folder.rglob("*")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts) and p.is_file()
    )
    if not files:
        raise UserError(f"{where}: no {'images' if images else 'files'} (empty folder)")
    if images:
        for p in files:
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UserError(
                    f"{where}: {p.relative_to(folder)} is not an image file (the folder may hold "
                    f"only {', '.join(e[1:] for e in IMAGE_EXTENSIONS)}; --preprocess reads others)"
                )
    return files


def folder_samples(
    folder: Path, inputs: list[onnx.ValueInfoProto], opts: DataOptions, where: str
) -> FileSamples:
    """The folder's samples, each file made and checked once (see the module docstring)."""
    for vi in inputs:
        check_input(vi)
    if opts.preprocess is None:
        if len(inputs) != 1:
            raise UserError(
                f"{where}: a folder of images feeds a model with one input; this one has "
                f"{len(inputs)} ({', '.join(vi.name for vi in inputs)}): use --preprocess"
            )
        vi = inputs[0]
        spec = image_spec(vi, opts, where)

        def make(path: Path) -> dict[str, np.ndarray]:
            return {vi.name: decode(path, spec, f"{where}: {path.relative_to(folder)}")}

    else:
        fn = load_function(opts.preprocess)
        pre = opts.preprocess

        def make(path: Path) -> dict[str, np.ndarray]:
            return preprocessed(fn, pre, path, inputs, str(path))

    files = _files(folder, opts.preprocess is None, where)
    out = FileSamples(files, make, [vi.name for vi in inputs])
    first: dict[str, tuple[int, ...]] = {}
    for i, path in enumerate(files):
        got = out.sample(i)
        at = f"{where}: {path.relative_to(folder)}"
        for vi in inputs:
            a = got[vi.name]
            check_array(at, vi, a)
            shape = first.setdefault(vi.name, a.shape)
            if a.shape != shape:
                raise UserError(
                    f"{at}: array {vi.name!r} has shape {'x'.join(map(str, a.shape))}, the first "
                    f"file's {'x'.join(map(str, shape))}: every sample must share a shape"
                )
            check_finite(at, vi.name, a)
    return out
