"""The latency lookup table (LUT): measured conv latencies cached in a JSON file, per machine.

A LUT is bound to one machine: the ONNX Runtime version and the CPU identity
(:func:`onnx_sk.runtime.machine.cpu_identity`) it was measured with sit at its top. Its entries are keyed
by ``<provider>|threads=<T>|<shape key>`` and hold the dense conv's median latency and, per
candidate key (design, group numbers, bottleneck, shuffle implementation), the median latency and
the paired speedup over the dense conv measured in the same interleaved rounds (an int8 entry,
keyed ``<shape key>-int8``, has ``"precision": "int8"``, its candidates timed in int8 QDQ form,
their speedups over the fp32 dense conv, and ``dense_int8``: the dense conv in int8). Version 2:
a candidate's latency is its time between NCHWc neighbours (:mod:`onnx_sk.runtime.micro`);
version 1 timed each conv alone, and is refused (measure again)::

    {"format": "onnx-sk-latency-lut", "version": 2,
     "onnxruntime": "1.32.0", "cpu": "AMD EPYC (x86_64, avx512f)",
     "entries": {"CPUExecutionProvider|threads=1|c64-f64-k3x3-...": {
         "provider": ..., "threads": 1, "shape": {...}, "dense_ms": 2.1, "rounds": 15,
         "candidates": {"pw-dw-pw K=16": {"design": "pw-dw-pw", "groups": {}, "bottleneck": 16,
                                         "shuffle": null, "ms": 0.3, "speedup": 7.0}, ...}}}}

The file is validated before use (``_parse``): a regular file (a FIFO or device is refused
before it is opened, so nothing blocks) of at most ``MAX_BYTES``, JSON no deeper than Python's
parser allows, and every entry and candidate of the schema above with values of the right type
(``_entry_problem``); anything else is one ``error:`` line naming the first defect.

A LUT from another ONNX Runtime version or CPU is *stale* here and refused with a message, never
silently reused — unless the caller says the LUT describes the target (``foreign=True``: the
NetAdapt workflow, ``profile-lut`` run on the edge device and the file carried back); then
nothing is measured on this machine and a missing entry is an error.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from onnx_sk.errors import UserError
from onnx_sk.graph.output_path import check_writable
from onnx_sk.graph.save import save_json
from onnx_sk.maths.designs import DESIGNS
from onnx_sk.runtime.machine import cpu_identity

FORMAT = "onnx-sk-latency-lut"
VERSION = 2
#: the largest LUT file read (a real table is a few hundred KiB)
MAX_BYTES = 64 * 2**20


def this_machine() -> dict[str, str]:
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__, "cpu": cpu_identity()}


def entry_key(provider: str, threads: int, shape_key: str) -> str:
    return f"{provider}|threads={threads}|{shape_key}"


@dataclass
class Lut:
    """Entries measured on ``machine``; ``foreign``: the LUT describes another (target) machine."""

    machine: dict[str, str] = field(default_factory=this_machine)
    entries: dict[str, dict] = field(default_factory=dict)
    path: Path | None = None
    foreign: bool = False

    def get(self, provider: str, threads: int, shape_key: str) -> dict | None:
        return self.entries.get(entry_key(provider, threads, shape_key))

    def put(self, provider: str, threads: int, shape_key: str, entry: dict) -> None:
        self.entries[entry_key(provider, threads, shape_key)] = entry

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **self.machine, "entries": self.entries}

    def save(self, path: str | Path | None = None) -> Path:
        out = Path(path or self.path or "")
        check_writable(out, "LUT")
        return save_json(self.to_dict(), out, "LUT")


def _bad(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not a readable onnx-sk latency table: {why}")


def _read(path: Path) -> str:
    """The file's text: a regular file of at most MAX_BYTES (checked before it is opened)."""
    try:
        st = os.stat(path)
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path} is a directory, not a latency table")
    if not stat.S_ISREG(st.st_mode):
        raise _bad(path, "not a regular file (a FIFO, socket or device)")
    if st.st_size > MAX_BYTES:
        raise _bad(path, f"{st.st_size} bytes, more than the {MAX_BYTES} a latency table may have")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except OSError as exc:
        raise _bad(path, exc.strerror or type(exc).__name__) from None
    if len(data) > MAX_BYTES:
        raise _bad(path, f"more than the {MAX_BYTES} bytes a latency table may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(path, "not UTF-8 text") from None


def _parse(path: Path) -> dict:
    text = _read(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(path, f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise _bad(path, "JSON nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(path, f'no "format": "{FORMAT}" field')
    if doc.get("version") != VERSION:
        raise _bad(
            path,
            f"version {doc.get('version')!r}, this onnx-sk reads version {VERSION}"
            + (" (version 1 timed convs alone: measure again)" if doc.get("version") == 1 else ""),
        )
    if not isinstance(doc.get("entries"), dict) or not all(
        isinstance(doc.get(k), str) for k in ("onnxruntime", "cpu")
    ):
        raise _bad(path, "missing onnxruntime, cpu or entries")
    for key, entry in doc["entries"].items():
        problem = _entry_problem(key, entry)
        if problem is not None:
            raise _bad(path, f"entry {key[:80]!r}: {problem}")
    return doc


def _is_ms(value: object) -> bool:
    """A finite, positive number (a time or a speedup)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _entry_problem(key: str, entry: object) -> str | None:
    """What is wrong with one entry (the schema in the module docstring), or None."""
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    if not isinstance(entry.get("provider"), str) or not _is_count(entry.get("threads")):
        return "missing or invalid provider or threads"
    if not key.startswith(entry_key(entry["provider"], entry["threads"], "")):
        return "its key does not match its provider and threads"
    if not _is_ms(entry.get("dense_ms")):
        return "dense_ms is not a positive number"
    cands = entry.get("candidates")
    if not isinstance(cands, dict):
        return "candidates is not an object"
    if entry.get("precision", "fp32") not in ("fp32", "int8"):
        return f"precision {entry.get('precision')!r} is not fp32 or int8"
    if entry.get("precision") == "int8":
        dense = entry.get("dense_int8")
        if (
            not isinstance(dense, dict)
            or not _is_ms(dense.get("ms"))
            or not _is_ms(dense.get("speedup"))
        ):
            return "an int8 entry's dense_int8 has no positive ms and speedup"
    for name, cand in cands.items():
        problem = _candidate_problem(cand)
        if problem is not None:
            return f"candidate {name[:60]!r}: {problem}"
    return None


def _candidate_problem(cand: object) -> str | None:
    if not isinstance(cand, dict):
        return f"expected an object, got {type(cand).__name__}"
    if cand.get("design") not in DESIGNS:
        return f"design {cand.get('design')!r} is not one of {', '.join(DESIGNS)}"
    groups = cand.get("groups")
    if not isinstance(groups, dict) or not all(_is_count(g) for g in groups.values()):
        return "groups is not an object of positive integers"
    if cand.get("bottleneck") is not None and not _is_count(cand.get("bottleneck")):
        return "bottleneck is not a positive integer or null"
    if cand.get("shuffle") not in (None, "reshape", "gather"):
        return "shuffle is not reshape, gather or null"
    if not _is_ms(cand.get("ms")) or not _is_ms(cand.get("speedup")):
        return "ms or speedup is not a positive number"
    return None


def load_lut(path: str | Path | None, foreign: bool = False) -> Lut:
    """The LUT at ``path`` (a new empty one when the file does not exist yet).

    A LUT measured with another ONNX Runtime version or CPU is refused unless ``foreign``.
    """
    if path is None:
        if foreign:
            raise UserError("--lut-from-target needs --lut FILE")
        return Lut()
    path = Path(path)
    if not path.exists():
        if foreign:
            raise UserError(
                f"{path}: no such latency table (--lut-from-target reads an existing one)"
            )
        check_writable(path, "LUT")  # measurements are written back: checked before any is made
        return Lut(path=path)
    doc = _parse(path)
    machine = {"onnxruntime": doc["onnxruntime"], "cpu": doc["cpu"]}
    here = this_machine()
    if machine != here and not foreign:
        raise UserError(
            f"{path} is a stale latency table: measured with onnxruntime {machine['onnxruntime']} on "
            f"{machine['cpu']!r}, this is onnxruntime {here['onnxruntime']} on {here['cpu']!r}; "
            "re-run onnx-sk profile-lut here, or pass --lut-from-target if the table describes "
            "the target device"
        )
    if not foreign:
        check_writable(path, "LUT")
    return Lut(machine, dict(doc["entries"]), path, foreign=machine != here)
