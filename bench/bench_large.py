"""A model above protobuf's 2 GB limit through ``onnx-sk optimize``: peak memory, time, output.

Builds a synthetic chain of big 3×3 convs (default 5 × 4096→4096, fp32: 3.0 GB) straight into
external data (one weight in memory at a time), runs ``onnx-sk optimize`` on it in a child
process and reports:

- the child's peak RSS (``VmHWM`` from its own ``/proc/self/status``, read at exit: Linux keeps
  ``ru_maxrss`` across fork+exec, so the parent's view would be wrong) over the model's size
  (target ≤ 2.5×) and the wall time;
- that the output uses external data correctly: ``OUT`` + ``OUT.data`` beside it, every large
  tensor in ``OUT.data``, no other file written, no temporary file left, the input's files
  unchanged, and ``onnx.checker.check_model(OUT, full_check=True)`` passes.

The big files are deleted afterwards (``--keep`` keeps them)::

    .venv/bin/python bench/bench_large.py            # 5 × 4096² × 3×3 (3.0 GB)
    .venv/bin/python bench/bench_large.py --convs 10 # 6.0 GB (needs ~15 GB of memory)
    # an output above 2 GB too: unknown options go to optimize
    .venv/bin/python bench/bench_large.py --out bench/results/large_model_big_output.json --exclude conv1 --exclude conv2 --exclude conv3 --exclude conv4

Results: ``bench/results/large_model.json`` / ``large_model_big_output.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PROTOBUF_LIMIT = 2**31 - 1  # protobuf cannot serialise one message above this

#: runs the CLI and, at exit, writes the process's own peak RSS (VmHWM, kB) to argv[1]
CHILD = """
import atexit, runpy, sys
def _hwm(path=sys.argv[1]):
    with open("/proc/self/status") as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    with open(path, "w") as out:
        out.write(str(kb))
atexit.register(_hwm)
sys.argv = ["onnx-sk", *sys.argv[2:]]
runpy.run_module("onnx_sk", run_name="__main__")
"""


def build_large_model(folder: Path, channels: int, convs: int, spatial: int, seed: int = 0) -> Path:
    """x [1, C, s, s] → convs × (Conv 3×3, pads 1) → y; weights written one by one to
    ``big.onnx.data`` (external data), so building holds one weight in memory."""
    rng = np.random.default_rng(seed)
    model_path, data_path = folder / "big.onnx", folder / "big.onnx.data"
    nodes, inits, t, offset = [], [], "x", 0
    with open(data_path, "wb") as data:
        for i in range(convs):
            w = rng.standard_normal((channels, channels, 3, 3), dtype=np.float32)
            w *= np.float32(1 / np.sqrt(channels * 9))
            raw = w.tobytes()
            tensor = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=list(w.shape))
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (
                ("location", data_path.name),
                ("offset", offset),
                ("length", len(raw)),
            ):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            data.write(raw)
            offset += len(raw)
            del w, raw
            inits.append(tensor)
            nodes.append(
                helper.make_node("Conv", [t, f"w{i}"], [f"y{i}"], name=f"conv{i}", pads=[1] * 4)
            )
            t = f"y{i}"
    shape = [1, channels, spatial, spatial]
    graph = helper.make_graph(
        nodes, "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, shape)],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model_path.write_bytes(model.SerializeToString())
    return model_path


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def check_output(folder: Path, out: Path, inputs_before: dict[str, str]) -> dict:
    """The output's files and external data, and the full checker on it."""
    names = sorted(p.name for p in folder.iterdir())
    expected = sorted([*inputs_before, out.name, f"{out.name}.data"])
    header = onnx.load(out, load_external_data=False)
    locations, inline_large = set(), []
    for tensor in header.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            locations.add({e.key: e.value for e in tensor.external_data}["location"])
        elif len(tensor.raw_data) > 1024:
            inline_large.append(tensor.name)
    t0 = time.perf_counter()
    onnx.checker.check_model(str(out), full_check=True)
    return {
        "files": names,
        "files_as_expected": names == expected,
        "external_locations": sorted(locations),
        "external_data_ok": locations == {f"{out.name}.data"} and not inline_large,
        "model_file_bytes": out.stat().st_size,
        "data_file_bytes": (folder / f"{out.name}.data").stat().st_size,
        "inputs_unchanged": {n: _digest(folder / n) for n in inputs_before} == inputs_before,
        "full_check": True,
        "full_check_s": time.perf_counter() - t0,
    }


def run(channels: int, convs: int, spatial: int, folder: Path, extra: list[str]) -> dict:
    t0 = time.perf_counter()
    src = build_large_model(folder, channels, convs, spatial)
    model_bytes = src.stat().st_size + (folder / "big.onnx.data").stat().st_size
    build_s = time.perf_counter() - t0
    inputs_before = {p.name: _digest(p) for p in sorted(folder.iterdir())}
    out = folder / "big_sk.onnx"
    hwm_file = Path(tempfile.mkstemp(prefix="onnx-sk-hwm-")[1])
    cmd = [sys.executable, "-c", CHILD, str(hwm_file), "optimize", str(src), str(out),
           "--include-first", "--init", "he",  # the measured figures are He's (fitting: bench_init)
           "--report", str(folder.parent / "large_report.json")]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_kb = int(hwm_file.read_text() or 0)
    hwm_file.unlink()
    doc = {
        "channels": channels,
        "convs": convs,
        "input_shape": [1, channels, spatial, spatial],
        "model_bytes": model_bytes,
        "above_protobuf_limit": model_bytes > PROTOBUF_LIMIT,
        "build_s": build_s,
        "returncode": proc.returncode,
        "stdout_tail": proc.stdout.strip().splitlines()[-3:],
        "stderr": proc.stderr.strip(),
        "optimize_wall_s": wall,
        "peak_rss_bytes": peak_kb * 1024,
        "peak_rss_over_model": peak_kb * 1024 / model_bytes,
        "target_ratio": 2.5,
    }
    doc["within_target"] = doc["peak_rss_over_model"] <= doc["target_ratio"]
    if proc.returncode == 0:
        doc["output"] = check_output(folder, out, inputs_before)
        report = json.loads((folder.parent / "large_report.json").read_text())
        doc["replaced"] = report["totals"]["replaced"]
        doc["params_ratio"] = report["totals"]["params_ratio"]
        doc["verification"] = report["verification"]
    return doc


def markdown(doc: dict) -> str:
    gb = 1e9
    rows = [
        ("model", f"{doc['convs']} × Conv {doc['channels']}→{doc['channels']} 3×3, input {doc['input_shape']}"),
        ("model size (graph + external data)", f"{doc['model_bytes'] / gb:.2f} GB (> 2 GB: {doc['above_protobuf_limit']})"),
        ("optimize exit code", str(doc["returncode"])),
        ("optimize wall time", f"{doc['optimize_wall_s']:.1f} s"),
        ("peak RSS (child VmHWM)", f"{doc['peak_rss_bytes'] / gb:.2f} GB"),
        ("peak RSS / model size", f"{doc['peak_rss_over_model']:.2f}× (target ≤ {doc['target_ratio']}×)"),
    ]  # fmt: skip
    if "output" in doc:
        o = doc["output"]
        rows += [
            ("convs replaced / params ratio", f"{doc['replaced']} / {doc['params_ratio']:.4f}"),
            ("verification max abs diff", f"{doc['verification']['max_abs_diff']:.2g}"),
            ("output files", ", ".join(f for f in o["files"] if f.startswith("big_sk"))),
            ("external data in OUT.data only", str(o["external_data_ok"])),
            ("no stray or temporary file", str(o["files_as_expected"])),
            ("input files unchanged", str(o["inputs_unchanged"])),
            ("onnx.checker full_check on OUT", f"passed ({o['full_check_s']:.1f} s)"),
        ]
    lines = ["| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=4096)
    p.add_argument("--convs", type=int, default=5)
    p.add_argument("--spatial", type=int, default=8)
    p.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the big files")
    p.add_argument("--out", type=Path, default=RESULTS / "large_model.json")
    a, extra = p.parse_known_args()
    base = Path(tempfile.mkdtemp(prefix="onnx-sk-large-", dir=a.dir))
    folder = base / "models"
    folder.mkdir()
    try:
        doc = run(a.channels, a.convs, a.spatial, folder, extra)
    finally:
        if not a.keep:
            shutil.rmtree(base)
    doc["command"] = " ".join(["bench/bench_large.py", *sys.argv[1:]])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    if doc["returncode"] != 0:
        print(doc["stderr"], file=sys.stderr)
    sys.exit(0 if doc["returncode"] == 0 else 1)


if __name__ == "__main__":
    main()
