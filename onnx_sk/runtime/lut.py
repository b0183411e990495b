"""The latency lookup table (LUT): measured conv latencies cached in a JSON file, per machine.

A LUT is bound to one machine: the ONNX Runtime version and the CPU identity
(:func:`onnx_sk.runtime.machine.cpu_identity`) it was measured with sit at its top. Its entries are keyed
by ``<provider>|threads=<T>|<shape key>`` and hold the dense conv's median latency and, per
candidate key (design, group numbers, bottleneck, shuffle implementation), the median latency and
the paired speedup over the dense conv measured in the same interleaved rounds::

    {"format": "onnx-sk-latency-lut", "version": 1,
     "onnxruntime": "1.32.0", "cpu": "AMD EPYC (x86_64, avx512f)",
     "entries": {"CPUExecutionProvider|threads=1|c64-f64-k3x3-...": {
         "provider": ..., "threads": 1, "shape": {...}, "dense_ms": 2.1, "rounds": 15,
         "candidates": {"pw-dw-pw K=16": {"design": "pw-dw-pw", "groups": {}, "bottleneck": 16,
                                         "shuffle": null, "ms": 0.3, "speedup": 7.0}, ...}}}}

A LUT from another ONNX Runtime version or CPU is *stale* here and refused with a message, never
silently reused — unless the caller says the LUT describes the target (``foreign=True``: the
NetAdapt workflow, ``profile-lut`` run on the edge device and the file carried back); then
nothing is measured on this machine and a missing entry is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from onnx_sk.errors import UserError
from onnx_sk.graph.save import save_json
from onnx_sk.runtime.machine import cpu_identity

FORMAT = "onnx-sk-latency-lut"
VERSION = 1


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
        if not out.parent.exists():
            raise UserError(f"LUT folder {out.parent} does not exist")
        return save_json(self.to_dict(), out)


def _bad(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not a readable onnx-sk latency table: {why}")


def _parse(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise _bad(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _bad(path, f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a latency table") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(path, f'no "format": "{FORMAT}" field')
    if doc.get("version") != VERSION:
        raise _bad(path, f"version {doc.get('version')!r}, this onnx-sk reads version {VERSION}")
    if not isinstance(doc.get("entries"), dict) or not all(
        isinstance(doc.get(k), str) for k in ("onnxruntime", "cpu")
    ):
        raise _bad(path, "missing onnxruntime, cpu or entries")
    return doc


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
    return Lut(machine, dict(doc["entries"]), path, foreign=machine != here)
