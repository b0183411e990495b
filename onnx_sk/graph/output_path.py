"""Where an output goes, checked before anything is computed.

- ``resolve_output``: a symlink is written through (its final target is replaced atomically,
  beside itself; the link stays a link); a target that exists and is a folder or not a regular
  file (a device, FIFO or socket) is refused;
- ``check_writable``: that, and the target's folder exists and is writable;
- ``check_output_path``: that, and the output is not the input model (unless asked) nor its
  external data.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from onnx_sk.errors import UserError


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def resolve_output(out: str | os.PathLike, what: str = "output path") -> Path:
    """The file to write for ``out``: ``out`` itself, or a symlink's final target (written
    through). Refuses a target that exists and is a folder or not a regular file."""
    out = Path(out)
    target = Path(os.path.realpath(out)) if out.is_symlink() else out
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise UserError(f"{what} {out}: {exc.strerror or type(exc).__name__}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{what} {out} is a directory")
    if not stat.S_ISREG(mode):
        raise UserError(
            f"{what} {out} is not a regular file (a device, FIFO or socket): refused "
            "(onnx-sk replaces only regular files)"
        )
    return target


def check_writable(out: str | os.PathLike, what: str = "output path") -> Path:
    """``resolve_output``, then the target's folder must exist and be writable."""
    target = resolve_output(out, what)
    folder = "output" if what == "output path" else what
    if not target.parent.exists():
        raise UserError(f"{folder} folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise UserError(f"{folder} folder {target.parent} is not writable")
    return target


def check_output_path(
    out: str | os.PathLike,
    inputs: Sequence[Path | None],
    overwrite_input: bool,
    input_data: Sequence[Path] = (),
) -> Path:
    """Refuse an output in a missing folder, over an input unless asked, or whose external data
    file (``OUT.data``) would overwrite an input's external data (``input_data``). Returns the
    file to write (a symlink's target)."""
    given, out = Path(out), check_writable(out)
    for src in inputs:
        if src is not None and _same_file(src, out) and not overwrite_input:
            raise UserError(
                f"output path {given} is the input model: refusing to overwrite it "
                "(pass --overwrite to allow)"
            )
    replaces_input = any(src is not None and _same_file(src, out) for src in inputs)
    for data in input_data:
        for target in (out, out.parent / f"{out.name}.data"):
            if _same_file(data, target) and not (target != out and replaces_input):
                raise UserError(
                    f"output path {given} would overwrite {target.name}, the input model's "
                    "external data: refused (choose another output name)"
                )
    return out
