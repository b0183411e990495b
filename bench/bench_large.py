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

``--scaling 200,500,1000,2000`` measures instead how ``optimize`` time grows with the number of
convs: a chain of N × (Conv 8→8 3×3 → InstanceNormalization), input 1×8×8×8, each size
optimized in a child process (``--include-first``, verification on; extra options go to
optimize, e.g. ``--for-training``); it reports the wall time, the peak RSS and the ratio of each
time to the smallest chain's (target, issue 14: 2,000 convs ≤ 10× the 200-conv time, i.e. linear)::

    .venv/bin/python bench/bench_large.py --scaling 200,500,1000,2000

Results: ``bench/results/conv_scaling.json`` and ``.md``.
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


def build_chain(path: Path, convs: int, channels: int = 8, spatial: int = 8, seed: int = 0) -> None:
    """x → convs × (Conv 3×3, pads 1 → InstanceNormalization) → y: values stay of unit scale,
    so verification compares real numbers however long the chain."""
    rng = np.random.default_rng(seed)
    nodes, inits, t = [], [], "x"
    for i in range(convs):
        w = 0.01 * rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
        w[np.arange(channels), np.arange(channels), 1, 1] += 1
        inits.append(onnx.numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("Conv", [t, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4),
            helper.make_node(
                "InstanceNormalization", [f"c{i}", "ones", "zeros"], [f"y{i}"], name=f"norm{i}"
            ),
        ]
        t = f"y{i}"
    inits += [
        onnx.numpy_helper.from_array(np.ones(channels, np.float32), "ones"),
        onnx.numpy_helper.from_array(np.zeros(channels, np.float32), "zeros"),
    ]
    shape = [1, channels, spatial, spatial]
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, shape)],
        inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _optimize_child(
    src: Path, out: Path, extra: list[str]
) -> tuple[subprocess.CompletedProcess, float, int]:
    """``onnx-sk optimize SRC OUT`` in a child process: (process, wall seconds, peak RSS bytes)."""
    hwm_file = Path(tempfile.mkstemp(prefix="onnx-sk-hwm-")[1])
    # He weights: the figures are the graph work's (the fitting cost is bench_init's)
    cmd = [sys.executable, "-c", CHILD, str(hwm_file), "optimize", str(src), str(out),
           "--include-first", "--init", "he", *extra]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = int(hwm_file.read_text() or 0) * 1024
    hwm_file.unlink()
    return proc, wall, peak


def scaling(sizes: list[int], folder: Path, extra: list[str]) -> dict:
    """optimize time and peak RSS for chains of each size; ratios to the smallest."""
    rows = []
    for n in sizes:
        src, out = folder / f"chain{n}.onnx", folder / f"chain{n}_sk.onnx"
        build_chain(src, n)
        proc, wall, peak = _optimize_child(src, out, extra)
        rows.append({"convs": n, "returncode": proc.returncode, "wall_s": wall,
                     "peak_rss_bytes": peak, "stderr": proc.stderr.strip()[-300:]})  # fmt: skip
        print(f"{n} convs: exit {proc.returncode}, {wall:.1f} s, peak RSS {peak / 1e6:.0f} MB")
        src.unlink()
        out.unlink(missing_ok=True)
    base = rows[0]
    for r in rows:
        r["time_ratio"] = r["wall_s"] / base["wall_s"]
        r["size_ratio"] = r["convs"] / base["convs"]
    last = rows[-1]
    return {
        "model": "N × (Conv 8→8 3×3, pads 1 → InstanceNormalization), input 1×8×8×8",
        "optimize_options": ["--include-first", "--init", "he", *extra],
        "rows": rows,
        "target": "time ratio ≤ size ratio (linear); issue 14: 2,000 convs ≤ 10× the 200-conv time",
        "linear": last["time_ratio"] <= last["size_ratio"],
    }


def scaling_markdown(doc: dict) -> str:
    lines = [f"{doc['model']}; `onnx-sk optimize {' '.join(doc['optimize_options'])}`", "",
             "| convs | exit | optimize wall time | × smallest | size × | peak RSS |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in doc["rows"]:
        lines.append(
            f"| {r['convs']} | {r['returncode']} | {r['wall_s']:.1f} s | {r['time_ratio']:.2f}× "
            f"| {r['size_ratio']:.0f}× | {r['peak_rss_bytes'] / 1e6:.0f} MB |"
        )
    return "\n".join(lines) + "\n"


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
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--scaling", default=None, help="comma-separated chain sizes, e.g. 200,2000")
    a, extra = p.parse_known_args()
    base = Path(tempfile.mkdtemp(prefix="onnx-sk-large-", dir=a.dir))
    folder = base / "models"
    folder.mkdir()
    try:
        if a.scaling:
            doc = scaling([int(n) for n in a.scaling.split(",")], folder, extra)
            doc["returncode"] = max(r["returncode"] for r in doc["rows"])
        else:
            doc = run(a.channels, a.convs, a.spatial, folder, extra)
    finally:
        if not a.keep:
            shutil.rmtree(base)
    doc["command"] = " ".join(["bench/bench_large.py", *sys.argv[1:]])
    out = a.out or RESULTS / ("conv_scaling.json" if a.scaling else "large_model.json")
    text = scaling_markdown(doc) if a.scaling else markdown(doc)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)
    if doc["returncode"] != 0:
        print(doc.get("stderr", ""), file=sys.stderr)
    sys.exit(0 if doc["returncode"] == 0 else 1)


if __name__ == "__main__":
    main()
