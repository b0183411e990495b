"""PNG plots of benchmark documents (matplotlib, the optional ``plot`` extra).

``plot_bench(doc, out)``: left, p50 latency per model for each provider × threads (bars) with the
p90 as a whisker; right, when the benchmark was profiled, each model's time split by kind (dense,
depthwise, grouped convs, shuffles, layout reorders, …) for the first configuration.
"""

from __future__ import annotations

import io
from pathlib import Path

from onnx_sk.errors import UserError
from onnx_sk.graph.output_path import check_writable
from onnx_sk.graph.save import OutputFile


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'onnx-sk[plot]'") from None
    return plt


def check_plot_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--plot {out}: expected a .png file name")
    check_writable(out, "--plot")
    _pyplot()
    return out


def plot_bench(doc: dict, out: str | Path, top_kinds: int = 7) -> Path:
    plt = _pyplot()
    out = Path(out)
    results = doc["results"]
    names = [m["name"] for m in doc["models"]]
    profiled = results[0]["models"][0].get("profile") is not None
    fig, axes = plt.subplots(
        1, 2 if profiled else 1, figsize=(13 if profiled else 7, 4.5), squeeze=False
    )
    ax = axes[0][0]
    width = 0.8 / len(results)
    for k, res in enumerate(results):
        p50 = [m["latency_ms"]["p50"] for m in res["models"]]
        p90 = [m["latency_ms"]["p90"] for m in res["models"]]
        xs = [i + (k - (len(results) - 1) / 2) * width for i in range(len(names))]
        ax.bar(
            xs,
            p50,
            width,
            label=f"{res['provider'].removesuffix('ExecutionProvider')} ×{res['threads']}",
        )
        ax.errorbar(
            xs,
            p50,
            yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p90, strict=True)]],
            fmt="none",
            ecolor="k",
            capsize=2,
        )
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("latency p50 (ms), whisker p90")
    ax.set_title("latency per model")
    ax.legend(fontsize=8)
    if profiled:
        _kinds(axes[0][1], results[0], names, top_kinds)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
    with OutputFile(out) as output:  # atomic, through a symlink, never over a special file
        output.stage_bytes(png.getvalue())
        return output.commit()


def _kinds(ax, res: dict, names: list[str], top: int) -> None:
    totals: dict[str, float] = {}
    for m in res["models"]:
        for row in m["profile"]["kinds"]:
            totals[row["kind"]] = totals.get(row["kind"], 0.0) + row["ms"]
    kinds = sorted(totals, key=lambda k: -totals[k])[:top]
    bottom = [0.0] * len(names)
    for kind in [*kinds, "other"]:
        values = []
        for m in res["models"]:
            rows = {r["kind"]: r["ms"] for r in m["profile"]["kinds"]}
            values.append(
                sum(v for k, v in rows.items() if k not in kinds)
                if kind == "other"
                else rows.get(kind, 0.0)
            )
        ax.bar(range(len(names)), values, 0.6, bottom=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("profiled ms per run")
    ax.set_title(
        f"time by kind ({res['provider'].removesuffix('ExecutionProvider')} ×{res['threads']})"
    )
    ax.legend(fontsize=7)
