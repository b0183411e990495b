"""Reference models through ``optimize --objective params`` and ``--objective latency``, benchmarked.

For each model (made by ``models/make_torch_models.py`` into ``models/big/``):

1. ``optimize`` with the default policy (first conv kept) and ``--objective params``, and with
   ``--objective latency`` measured on the CPU provider at 1 thread (LUT: ``bench/results/lut.json``);
2. ``onnx_sk.runtime.bench.bench`` on [original, params, latency], interleaved, batch 1, 224×224, at 1 and
   2 threads, with ORT's profiler;
3. per replaced conv, the profiled time of its SK nodes (ORT node origins ``<conv>/sk/…``) against
   the dense conv's in the original model (1 thread): a replaced conv slower than its dense
   original is listed;
4. the fraction of the MAC ideal: speedup / (MACs_original / MACs_variant).

Writes ``bench/results/bench_models.{json,md,png}``. Every figure is a ratio measured in one run::

    .venv/bin/python bench/bench_models.py                 # all reference models
    .venv/bin/python bench/bench_models.py --models resnet18 --runs 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnx_sk.graph.save import save_json  # noqa: E402
from onnx_sk.pipeline import optimize  # noqa: E402
from onnx_sk.runtime.bench import BenchOptions, bench  # noqa: E402

MODELS = ["resnet18", "resnet34", "resnet50", "vgg16", "alexnet", "table1_224"]
MAKE = {
    "table1_224": "models/make_torch_models.py table1 --out-dir models/big --name table1_224",
}
BIG = ROOT / "models" / "big"
RESULTS = ROOT / "bench" / "results"


def _optimized(name: str, objective: str, lut: Path, redo: bool) -> tuple[Path, dict]:
    src = BIG / f"{name}.onnx"
    out = BIG / "sk" / f"{name}_{objective}.onnx"
    rep_path = out.with_suffix(".report.json")
    if out.exists() and rep_path.exists() and not redo:
        return out, json.loads(rep_path.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {"lut": str(lut), "threads": 1} if objective == "latency" else {}
    start = time.perf_counter()
    _, report = optimize(src, out, objective=objective, overwrite=True, **extra)
    doc = report.to_dict()
    doc["seconds"] = time.perf_counter() - start
    save_json(doc, rep_path)
    print(
        f"  {name} --objective {objective}: {report.message} ({doc['seconds']:.0f} s)", flush=True
    )
    return out, doc


def _conv_ms(profile: dict, conv: str, sk: bool) -> float:
    if sk:
        return sum(
            n["ms"] for n in profile["nodes"] if (n["origin"] or "").startswith(conv + "/sk/")
        )
    return sum(n["ms"] for n in profile["nodes"] if n["origin"] == conv)


def _per_layer(doc: dict, report: dict, variant: int) -> list[dict]:
    res = next(r for r in doc["results"] if r["threads"] == 1)
    dense_prof, sk_prof = res["models"][0]["profile"], res["models"][variant]["profile"]
    rows = []
    for conv in report["convs"]:
        if not conv["design"]:
            continue
        dense, sk = _conv_ms(dense_prof, conv["name"], False), _conv_ms(sk_prof, conv["name"], True)
        rows.append({"conv": conv["name"], "design": conv["design"], "dense_ms": dense, "sk_ms": sk,
                     "speedup": dense / sk if sk else None})  # fmt: skip
    return rows


def run_model(name: str, args, lut: Path) -> dict:
    src = BIG / f"{name}.onnx"
    if not src.exists():
        how = MAKE.get(name, f"models/make_torch_models.py {name} --out-dir models/big")
        raise SystemExit(f"{src} is missing: make it with .venv/bin/python {how}")
    variants = {
        "params": _optimized(name, "params", lut, args.redo),
        "latency": _optimized(name, "latency", lut, args.redo),
    }
    options = BenchOptions(threads=(1, 2), warmup=3, runs=args.runs, profile=True, profile_runs=5,
                           input_shapes={"": (1, 3, 224, 224)})  # fmt: skip
    paths = [src, variants["params"][0], variants["latency"][0]]
    doc = bench(paths, options, names=[name, "params", "latency"])
    macs = [m["macs"] for m in doc["models"]]
    rows = []
    for i, label in enumerate(["original", "params", "latency"]):
        row = {
            "model": name,
            "variant": label,
            "params": doc["models"][i]["params"],
            "macs": macs[i],
        }
        for res in doc["results"]:
            m = res["models"][i]
            t = res["threads"]
            row[f"p50_ms_{t}t"] = m["latency_ms"]["p50"]
            row[f"speedup_{t}t"] = m["speedup_vs_first"]
            row[f"mac_ideal_fraction_{t}t"] = m["speedup_vs_first"] / (macs[0] / macs[i])
        rows.append(row)
    layers = {
        label: _per_layer(doc, variants[label][1], i + 1)
        for i, label in enumerate(["params", "latency"])
    }
    return {"rows": rows, "per_layer": layers, "bench": doc}


def markdown(rows: list[dict], slower: dict) -> str:
    head = ("| model | variant | params | MACs | p50 1 thr (ms) | speedup 1 thr | MAC-ideal 1 thr | "
            "p50 2 thr (ms) | speedup 2 thr | MAC-ideal 2 thr |")  # fmt: skip
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e9:.3f}G | "
            f"{r['p50_ms_1t']:.1f} | {r['speedup_1t']:.2f}× | {100 * r['mac_ideal_fraction_1t']:.0f}% | "
            f"{r['p50_ms_2t']:.1f} | {r['speedup_2t']:.2f}× | {100 * r['mac_ideal_fraction_2t']:.0f}% |"
        )
    lines.append("")
    for key, convs in slower.items():
        lines.append(f"- {key}: replaced convs slower than dense in the per-layer profile: "
                     + (", ".join(f"{c['conv']} ({c['speedup']:.2f}×)" for c in convs) or "none"))  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    bars = [("params", 1), ("latency", 1), ("params", 2), ("latency", 2)]
    width = 0.8 / len(bars)
    for k, (variant, t) in enumerate(bars):
        ys = [
            next(r for r in rows if r["model"] == m and r["variant"] == variant)[f"speedup_{t}t"]
            for m in models
        ]
        xs = [i + (k - 1.5) * width for i in range(len(models))]
        ax.bar(xs, ys, width, label=f"--objective {variant}, {t} thread{'s' if t > 1 else ''}")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("speedup over the original (p50 ratio, interleaved)")
    ax.set_title("onnx-sk on ONNX Runtime CPU, batch 1, 224×224")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--redo", action="store_true", help="re-run optimize even if its output exists")
    p.add_argument("--out", default=str(RESULTS / "bench_models"))
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    lut = RESULTS / "lut.json"
    out = Path(args.out)
    rows, per_layer, docs = [], {}, {}
    for name in args.models:
        print(f"{name}:", flush=True)
        result = run_model(name, args, lut)
        rows += result["rows"]
        docs[name] = result["bench"]
        for label, layers in result["per_layer"].items():
            per_layer[f"{name} {label}"] = layers
        for r in result["rows"]:
            print(f"  {r['variant']:8s} p50 {r['p50_ms_1t']:8.2f} ms ({r['speedup_1t']:.2f}×) 1 thr, "
                  f"{r['p50_ms_2t']:8.2f} ms ({r['speedup_2t']:.2f}×) 2 thr", flush=True)  # fmt: skip
    slower = {
        k: [c for c in v if c["speedup"] is not None and c["speedup"] < 1]
        for k, v in per_layer.items()
    }
    save_json({"rows": rows, "per_layer": per_layer, "slower_than_dense": slower, "bench": docs},
              out.with_suffix(".json"))  # fmt: skip
    out.with_suffix(".md").write_text(markdown(rows, slower))
    plot(rows, out.with_suffix(".png"))
    print(markdown(rows, slower))


if __name__ == "__main__":
    main()
