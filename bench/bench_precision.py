"""Per-conv precision (``--precision auto``) against fp32 SK and ORT's own int8, interleaved.

For the models of ``models/big/`` (read only; ResNet-18/34/50, the YOLOv8s-style ``yolo_s`` at
320×320, AlexNet, VGG-16, MobileNetV2), at 1 thread, batch 1, each at its input size:

- ``dense``: the original (fp32);
- ``ort-int8``: ONNX Runtime's static QDQ quantization of the original
  (``onnxruntime.quantization.quantize_static``: QDQ, per-channel int8 weights, uint8
  activations, MinMax on the same calibration samples);
- ``sk-params``: ``optimize --objective params``;
- ``sk-latency``: ``optimize --objective latency`` (fp32);
- ``sk-auto``: ``optimize --objective latency --precision auto --calibration CAL``;
- ResNet-18 also ``sk-latency-first`` and ``sk-auto-first``: the same with ``--include-first``.

``--precision auto`` revises its per-conv choice by timing the network
(``onnx_sk.passes.int8_context``); the table lists the flips it kept.

Every SK variant gets the same ``--calibration`` samples (the fits use them too), and the
latency variants share one LUT. The variants of a model are timed in one interleaved run
(``onnx_sk.runtime.bench.bench``); ratios are paired medians against ``dense``. Fidelity: each
variant against the original on held-out samples of the calibration distribution (top-1
agreement, logits cosine). No image dataset ships here: the samples are synthetic image-like
inputs (``bench/image_like.py``: smooth random fields, ImageNet-normalised).

    .venv/bin/python bench/bench_precision.py                       # every model
    .venv/bin/python bench/bench_precision.py --models resnet18 --seconds 20

Writes ``bench/results/precision.{json,md}``; the models go to ``--work`` (default
``/tmp/onnx-sk-precision``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from image_like import image_like  # noqa: E402

from onnx_sk.graph.save import save_json  # noqa: E402
from onnx_sk.pipeline import optimize  # noqa: E402
from onnx_sk.runtime.bench import BenchOptions, bench  # noqa: E402
from onnx_sk.runtime.compare import compare_runs  # noqa: E402

BIG = ROOT / "models" / "big"
RESULTS = ROOT / "bench" / "results"
CAL_SAMPLES, EVAL_SAMPLES = 16, 32


def variants(name: str) -> dict[str, dict]:
    """Variant name → optimize options (None for the ones not made by optimize)."""
    out: dict[str, dict] = {
        "sk-params": {"objective": "params"},
        "sk-latency": {"objective": "latency"},
        "sk-auto": {"objective": "latency", "precision": "auto"},
    }
    if name == "resnet18":  # SK-only with the same options, then with auto precision
        out["sk-latency-first"] = {"objective": "latency", "include_first": True}
        out["sk-auto-first"] = {"objective": "latency", "precision": "auto", "include_first": True}
    return out


#: each auto variant against the better of ORT int8-only and SK-only with the same options
RIVALS = {"sk-auto": ("ort-int8", "sk-latency"), "sk-auto-first": ("ort-int8", "sk-latency-first")}


def input_size(path: Path) -> int:
    """H (= W) of the model's [1, 3, H, W] input."""
    dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return dims[2].dim_value


def ort_int8(src: Path, out: Path, cal: np.ndarray) -> float:
    """ORT's static QDQ quantization of ``src`` (per-channel, MinMax on ``cal``); seconds."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = onnx.load(src, load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{name: x[None]} for x in cal])

        def get_next(self):
            return next(self.it, None)

    start = time.perf_counter()
    quantize_static(
        str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return time.perf_counter() - start


def fidelity(src: Path, path: Path, xs: np.ndarray) -> dict:
    name = onnx.load(src, load_external_data=False).graph.input[0].name
    rows = compare_runs(src, path, iter({name: x[None]} for x in xs), top1=True, threads=1)
    r = rows[0]
    return {"cosine": r.cosine, "top1_agreement": r.top1_agreement}


def run_model(name: str, work: Path, cal_path: Path, cal: np.ndarray, xs, args) -> dict:
    src = BIG / f"{name}.onnx"
    paths: dict[str, Path] = {"dense": src}
    made: dict[str, dict] = {}
    q = work / f"{name}_ort_int8.onnx"
    if not (args.reuse and q.exists()):
        made["ort-int8"] = {"seconds": ort_int8(src, q, cal)}
    paths["ort-int8"] = q
    lut = work / "lut.json"
    for variant, opts in variants(name).items():
        out = work / f"{name}_{variant}.onnx"
        saved = out.with_suffix(".made.json")
        if args.reuse and out.exists() and saved.exists():
            made[variant] = json.loads(saved.read_text())
            paths[variant] = out
            continue
        start = time.perf_counter()
        _, report = optimize(
            src, out, overwrite=True, calibration=str(cal_path), seed=0,
            **({"lut": str(lut), "threads": 1} if opts["objective"] == "latency" else {}),
            **opts,
        )  # fmt: skip
        doc = report.to_dict()
        made[variant] = {
            "seconds": time.perf_counter() - start,
            "message": doc["message"],
            "conv_macs_ratio": doc["totals"].get("conv_macs_ratio"),
            "totals": doc["totals"],
            "precision": doc.get("precision"),
            "latency_check": doc.get("latency_check"),
            "int8_convs": (doc.get("precision") or {}).get("int8_convs", []),
            "fidelity_report": doc.get("fidelity"),
            "convs": [
                {k: c.get(k) for k in ("name", "design", "groups", "bottleneck", "precision")}
                for c in doc["convs"]
            ],
        }
        save_json(made[variant], saved)
        print(
            f"  {name} {variant}: {doc['message']} ({made[variant]['seconds']:.0f} s)", flush=True
        )
        paths[variant] = out
    names = list(paths)
    options = BenchOptions(threads=(1,), seconds=args.seconds, warmup=3, profile=True)
    timing = bench([str(paths[n]) for n in names], options, names=names)
    rows = timing["results"][0]["models"]
    for res in timing["results"]:  # the per-node profiles stay out of the committed JSON
        for row in res["models"]:
            (row.get("profile") or {}).pop("nodes", None)
    out = {"variants": {}, "bench": timing}
    for n, row in zip(names, rows, strict=True):
        out["variants"][n] = {
            "median_ms": row["latency_ms"].get("p50") or row["latency_ms"].get("median"),
            "speedup_vs_dense": row["speedup_vs_first"],
            "runs": row["runs"],
            "profile_op_types": (row.get("profile") or {}).get("op_types"),
            **({"fidelity": fidelity(src, paths[n], xs)} if n != "dense" else {}),
            **made.get(n, {}),
        }
    return out


def _num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(doc: dict) -> str:
    ran = {m.get("command", doc.get("command", "")) for m in doc["models"].values()}
    commands = ", ".join(f"`{c}`" for c in sorted(ran))
    lines = [
        "# Per-conv precision: SK fp32/int8 vs ORT int8 (1 thread, batch 1, 224×224; yolo_s 320×320)",
        "",
        f"Commands: {commands}. "
        "One interleaved run per model on a shared 2-vCPU machine "
        "(noisy: ratios are paired medians within the run). Fidelity: against the original on "
        f"{EVAL_SAMPLES} held-out synthetic image-like samples (bench/image_like.py; no image "
        f"dataset here), calibration on {CAL_SAMPLES} others (top-1: argmax along axis 1; for "
        "yolo_s that is over its raw head's channels per anchor).",
        "",
        "× rivals: an auto variant's speedup over the better of ORT int8-only and SK-only "
        "(fp32, same options) in the same run. In-context flips: the convs whose precision the "
        "network timing changed (passes/int8_context.py).",
        "",
        "| model | variant | median ms | × dense | × rivals | MAC ideal (fraction) | int8 convs "
        "| in-context flips | top-1 agree | cosine |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    profiles = []
    for model, res in doc["models"].items():
        for n, v in res["variants"].items():
            rivals = [res["variants"][r] for r in RIVALS.get(n, ()) if r in res["variants"]]
            best = max((r["speedup_vs_dense"] for r in rivals), default=None)
            vs = f"{v['speedup_vs_dense'] / best:.2f}" if best else "-"
            trials = (v.get("precision") or {}).get("context") or []
            kept = [f"{t['conv']} → {t['to']} ({t['speedup']:.2f}×)" for t in trials if t["kept"]]
            flips = f"{'; '.join(kept) or 'none'} of {len(trials)} tried" if trials else "-"
            if v.get("profile_op_types") and n.startswith("sk-auto"):
                top = ", ".join(
                    f"{r['op_type']} {r['share']:.0%} ({r['nodes']})"
                    for r in v["profile_op_types"][:6]
                )
                profiles.append(f"- {model} {n}: {top}")
            f = v.get("fidelity") or {}
            int8 = len(v.get("int8_convs") or []) if n.startswith("sk") else "-"
            if n == "ort-int8":
                int8 = "all"
            ratio = v.get("conv_macs_ratio")
            ideal = f"{1 / ratio:.1f}× ({v['speedup_vs_dense'] * ratio:.0%})" if ratio else "-"
            lines.append(
                f"| {model} | {n} | {v['median_ms']:.2f} | {v['speedup_vs_dense']:.2f} | {vs} "
                f"| {ideal} | {int8} | {flips} | "
                f"{_num(f.get('top1_agreement') if f else 1.0, 3)} | "
                f"{_num(f.get('cosine') if f else 1.0, 4)} |"
            )
    if profiles:
        lines += ["", "Profile of the auto variants (op type, share of kernel time, nodes):", ""]
        lines += profiles
    checks = []
    for model, res in doc["models"].items():
        for n, v in res["variants"].items():
            c = v.get("latency_check")
            if c and c.get("params_speedup"):
                taken = "params designs taken" if c["taken"] else "latency plan kept"
                checks.append(
                    f"- {model} {n}: the params plan's network ran {c['params_speedup']:.2f}× "
                    f"the latency plan's ({c['convs_differing']} convs differ; {taken})"
                )
    if checks:
        lines += [
            "",
            "The latency objective's own check (passes/latency_guard.py: the plan's network "
            "timed against the params objective's when they differ; params taken at >= 1.02×):",
            "",
        ]
        lines += checks
    return "\n".join(lines) + "\n"


def write_markdown(doc: dict) -> None:
    (RESULTS / "precision.md").write_text(markdown(doc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models", nargs="+",
        default=["resnet18", "resnet34", "resnet50", "yolo_s", "alexnet", "vgg16", "mobilenet_v2"],
    )  # fmt: skip
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/onnx-sk-precision"))
    ap.add_argument("--reuse", action="store_true", help="reuse the models made by a run before")
    ap.add_argument(
        "--keep-others", action="store_true",
        help="keep the rows of the models not run now from bench/results/precision.json",
    )  # fmt: skip
    ap.add_argument(
        "--markdown-only", action="store_true",
        help="rewrite precision.md from bench/results/precision.json, measure nothing",
    )  # fmt: skip
    args = ap.parse_args()
    if args.markdown_only:
        write_markdown(json.loads((RESULTS / "precision.json").read_text()))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    command = "python bench/bench_precision.py " + " ".join(sys.argv[1:])
    doc: dict = {"command": command, "models": {}}
    previous = RESULTS / "precision.json"
    if args.keep_others and previous.exists():  # the other models' rows of an earlier run
        doc = json.loads(previous.read_text())
    for name in args.models:
        print(f"{name}:", flush=True)
        size = input_size(BIG / f"{name}.onnx")
        cal = image_like(CAL_SAMPLES, size, seed=0)
        xs = image_like(EVAL_SAMPLES, size, seed=1)
        cal_path = args.work / f"calibration_{size}.npz"
        np.savez(cal_path, input=cal)
        doc["models"][name] = run_model(name, args.work, cal_path, cal, xs, args)
        doc["models"][name]["command"] = command
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_json(doc, RESULTS / "precision.json")
    write_markdown(doc)
    print(markdown(doc))


if __name__ == "__main__":
    main()
