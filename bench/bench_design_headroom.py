"""How much can the choice of SK designs still gain? The "free SK" bound, interleaved.

Issue 14 asks the latency objective to be >= 5% faster than the params objective (fp32). The
objectives differ only in the designs (and group numbers) of the replaced convs; everything
else in the network is the same. So no choice of designs can gain more than those convs cost.
This bench measures that cost directly: the ``free`` variant is the original model with every
conv that ``sk-params`` replaced swapped for the cheapest shape-preserving op there is:

- the same channels, stride 1: ``Identity`` (ORT removes it);
- a stride: ``MaxPool`` with a 1×1 kernel and the conv's strides (runs in ORT's NCHWc layout);
- other output channels: the input repeated along the channels (``Concat``) and cut (``Slice``).

Then ``dense``, ``sk-params``, ``sk-latency`` and ``free`` are timed in one interleaved run (1
thread, batch 1; ``onnx_sk.runtime.bench``). The headroom is t(sk-params) / t(free): the most any
design choice could gain over the params objective, were every replaced conv to cost nothing.
``needed`` is the share of the replaced convs' cost (t(sk-params) - t(free)) that a design
choice would have to remove for a 5% gain.

    .venv/bin/python bench/bench_design_headroom.py --models resnet50 resnet18 --seconds 20

The SK models are made as in bench/bench_precision.py (same calibration, one shared LUT in
``--work``; ``--reuse`` takes the ones a run of either bench left there). Writes
``bench/results/design_headroom.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from image_like import image_like  # noqa: E402

from onnx_sk.graph.save import save_json  # noqa: E402
from onnx_sk.pipeline import optimize  # noqa: E402
from onnx_sk.runtime.bench import BenchOptions, bench  # noqa: E402

BIG = ROOT / "models" / "big"
RESULTS = ROOT / "bench" / "results"
CAL_SAMPLES = 16
TARGET = 1.05


def free_model(src: Path, replaced: set[str], out: Path) -> int:
    """Write ``src`` with each conv named in ``replaced`` made (nearly) free; how many."""
    model = onnx.load(src)
    weights = {t.name: t.dims for t in model.graph.initializer}
    nodes, done = [], 0
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name not in replaced:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        strides = list(attrs.get("strides", [1, 1]))
        x, y, tag = node.input[0], node.output[0], node.name + "/free"
        c_out, c_in = weights[node.input[1]][:2]  # group 1: a replaced conv is dense
        if c_out != c_in:  # repeat the channels, then cut to c_out
            reps = -(-c_out // c_in)
            nodes.append(helper.make_node("Concat", [x] * reps, [tag + "/rep"], axis=1))
            cut = [tag + "/starts", tag + "/ends", tag + "/axes"]
            for name, value in zip(cut, ([0], [c_out], [1]), strict=True):
                model.graph.initializer.append(
                    onnx.numpy_helper.from_array(np.array(value, np.int64), name)
                )
            nodes.append(helper.make_node("Slice", [tag + "/rep", *cut], [tag + "/ch"]))
            x = tag + "/ch"
        if any(s != 1 for s in strides):
            nodes.append(
                helper.make_node("MaxPool", [x], [y], kernel_shape=[1, 1], strides=strides)
            )
        else:
            nodes.append(helper.make_node("Identity", [x], [y]))
        done += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = {i for n in nodes for i in n.input}
    live = [t for t in model.graph.initializer if t.name in kept]
    del model.graph.initializer[:]
    model.graph.initializer.extend(live)
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, out)
    return done


def make_sk(src: Path, out: Path, objective: str, work: Path, cal_path: Path, reuse: bool):
    """optimize ``src`` as bench_precision does; the report's conv rows."""
    saved = out.with_suffix(".made.json")
    if reuse and out.exists() and saved.exists():
        return json.loads(saved.read_text())["convs"]
    extra = {"lut": str(work / "lut.json"), "threads": 1} if objective == "latency" else {}
    _, report = optimize(
        src, out, overwrite=True, calibration=str(cal_path), seed=0, objective=objective, **extra
    )
    convs = [{k: c.get(k) for k in ("name", "design", "groups")} for c in report.to_dict()["convs"]]
    save_json({"convs": convs}, saved)
    return convs


def run_model(name: str, args) -> dict:
    src = BIG / f"{name}.onnx"
    size = onnx.load(src, load_external_data=False).graph.input[0]
    hw = size.type.tensor_type.shape.dim[2].dim_value
    cal_path = args.work / f"calibration_{hw}.npz"
    if not cal_path.exists():
        np.savez(cal_path, input=image_like(CAL_SAMPLES, hw, seed=0))
    paths = {"dense": src}
    convs = {}
    for variant in ("params", "latency"):
        paths[f"sk-{variant}"] = args.work / f"{name}_sk-{variant}.onnx"
        convs[variant] = make_sk(
            src, paths[f"sk-{variant}"], variant, args.work, cal_path, args.reuse
        )
    replaced = {c["name"] for c in convs["params"] if c["design"]}
    paths["free"] = args.work / f"{name}_free.onnx"
    free_model(src, replaced, paths["free"])
    names = list(paths)
    options = BenchOptions(threads=(1,), seconds=args.seconds, warmup=3)
    timing = bench([str(paths[n]) for n in names], options, names=names)
    rows = {n: r for n, r in zip(names, timing["results"][0]["models"], strict=True)}
    ms = {n: r["latency_ms"].get("p50") or r["latency_ms"].get("median") for n, r in rows.items()}
    speed = {n: r["speedup_vs_first"] for n, r in rows.items()}
    headroom = speed["free"] / speed["sk-params"]
    gain = speed["sk-latency"] / speed["sk-params"]
    cost = 1 - speed["sk-params"] / speed["free"]  # replaced convs' share of sk-params' time
    needed = (1 - 1 / TARGET) / cost if cost > 0 else float("inf")
    return {
        "replaced": len(replaced),
        "median_ms": ms,
        "speedup_vs_dense": speed,
        "headroom": headroom,
        "latency_vs_params": gain,
        "replaced_share": cost,
        "needed_cut": needed,
        "bench": timing,
    }


def markdown(doc: dict) -> str:
    lines = [
        "# Design-choice headroom: sk-params against the free-SK bound (1 thread, batch 1)",
        "",
        f"Command: `{doc['command']}`. One interleaved run per model. `free`: every conv that "
        "sk-params replaced swapped for the cheapest shape-preserving op (bench docstring). "
        "headroom = t(sk-params) / t(free), the most any choice of designs could gain; "
        "replaced share = the replaced convs' share of sk-params' time; cut needed = the share "
        f"of that cost a design choice must remove for the {TARGET:.2f}× target.",
        "",
        "| model | convs replaced | dense ms | sk-params ms | sk-latency ms | free ms | "
        "latency vs params | headroom | replaced share | cut needed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, r in doc["models"].items():
        ms = r["median_ms"]
        need = r["needed_cut"]
        lines.append(
            f"| {model} | {r['replaced']} | {ms['dense']:.2f} | {ms['sk-params']:.2f} | "
            f"{ms['sk-latency']:.2f} | {ms['free']:.2f} | {r['latency_vs_params']:.3f}× | "
            f"{r['headroom']:.3f}× | {r['replaced_share']:.1%} | "
            f"{'impossible' if need > 1 else f'{need:.0%}'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet50", "resnet18", "resnet34", "yolo_s"])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/onnx-sk-precision"))
    ap.add_argument("--reuse", action="store_true", help="reuse SK models made by a run before")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    doc: dict = {
        "command": "python bench/bench_design_headroom.py " + " ".join(sys.argv[1:]),
        "models": {},
    }
    for name in args.models:
        start = time.perf_counter()
        doc["models"][name] = run_model(name, args)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_json(doc, RESULTS / "design_headroom.json")
    (RESULTS / "design_headroom.md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
