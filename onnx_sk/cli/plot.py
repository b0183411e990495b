"""Plots of benchmark documents (matplotlib, the optional ``plot`` extra): PNG, SVG or PDF.

``plot_bench(doc, out)`` writes the figure in the format named by ``out``'s extension:

- left: wall-clock p50 latency per model (bars) for each provider × threads configuration, the
  p90 as a whisker, and above each bar the p50 speedup versus the first model
  (``speedup_p50_vs_first``, written ``1.23×`` as in the table);
- right, when the benchmark was profiled: each model's *profiled kernel time* of the first
  configuration split by kind (dense, depthwise, grouped convs, shuffles, layout reorders, ...),
  with that configuration's wall p50 as a marker beside it. The two are different measurements:
  kernel time is the sum of ORT's per-node profiled times in a separate profiled session (the
  profiler's own overhead included, so it can exceed the wall time), wall p50 comes from the
  unprofiled timed runs. A note on the panel says so.
- a caption: onnx-sk and ONNX Runtime versions, CPU identity and logical cores, thread counts,
  graph optimisation level, warm-up and timed runs.

Colours never mean two things: configurations are shades of blue (left panel only), kinds take
fixed colours from a palette without blue (right panel only), so a kind keeps its colour from one
plot to the next. SVG and PDF keep text as text (searchable, editable) and carry no date, so the
same document gives the same file.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

from onnx_sk.errors import UserError
from onnx_sk.graph.output_path import check_writable
from onnx_sk.graph.save import OutputFile

FORMATS = (".png", ".svg", ".pdf")

#: kind -> colour; fixed so that a kind looks the same in every plot (none of them blue)
KIND_COLOURS = {
    "Conv (dense)": "#d62728",
    "Conv (grouped)": "#ff7f0e",
    "Conv (depthwise)": "#2ca02c",
    "Conv (pointwise)": "#9467bd",
    "shuffle": "#e377c2",
    "layout": "#8c564b",
}
#: colours for the other kinds, in order of appearance; "other" (the rest summed) is grey
SPARE_COLOURS = ("#bcbd22", "#ffd92f", "#1b9e77", "#bebada", "#fb8072", "#a6761d", "#000080")
OTHER_COLOUR = "#7f7f7f"
#: savefig metadata that leaves the creation date out, so the same document gives the same file
NO_DATE: dict[str, dict[str, None]] = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}

WALL_NOTE = (
    "Not the same measurement: bars are ORT profiler kernel times (sum of per-node medians in a "
    "separate profiled session, profiling overhead included); ◆ is the wall p50 of the unprofiled "
    "timed runs (left panel). Compare shares within a bar; compare latency on the left."
)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'onnx-sk[plot]'") from None
    return plt


def check_plot_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"--plot {out}: expected a .png, .svg or .pdf file name")
    check_writable(out, "--plot")
    _pyplot()
    return out


def caption(doc: dict) -> list[str]:
    """Where and how the numbers were measured, as phrases to join with " · "."""
    env, s = doc["environment"], doc["settings"]
    timed = f"{s['seconds']} s" if s.get("seconds") else f"{s.get('runs') or 50} runs"
    return [
        f"onnx-sk {env['onnx_sk']}",
        f"onnxruntime {env['onnxruntime']}",
        f"CPU {env['cpu_identity']}, {env['cpu_count']} logical",
        f"threads {', '.join(str(t) for t in s['threads'])}",
        f"opt level {s['opt_level']}",
        f"warm-up {s['warmup']}, {timed} per model, interleaved",
    ]


def join_lines(phrases: list[str], width: int) -> str:
    """``phrases`` joined with " · ", a new line instead where a line would pass ``width``."""
    lines = [phrases[0]]
    for phrase in phrases[1:]:
        if len(lines[-1]) + 3 + len(phrase) > width:
            lines.append(phrase)
        else:
            lines[-1] += f" · {phrase}"
    return "\n".join(lines)


def config_label(res: dict) -> str:
    return f"{res['provider'].removesuffix('ExecutionProvider')} ×{res['threads']}"


def config_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` shades of blue, dark to light."""
    cmap = _pyplot().get_cmap("Blues")
    return [cmap(0.9 - 0.5 * k / max(n - 1, 1)) for k in range(n)]


def kind_colours(kinds: list[str]) -> dict[str, str]:
    spare = iter(SPARE_COLOURS)
    colours = {k: KIND_COLOURS.get(k) or next(spare, OTHER_COLOUR) for k in kinds}
    colours["other"] = OTHER_COLOUR
    return colours


def bench_figure(doc: dict, top_kinds: int = 7) -> Any:
    """The figure of ``plot_bench`` (a matplotlib ``Figure``; the caller closes it)."""
    plt = _pyplot()
    results = doc["results"]
    names = [m["name"] for m in doc["models"]]
    profiled = results[0]["models"][0].get("profile") is not None
    width = 13.0 if profiled else 7.0
    fig, axes = plt.subplots(1, 2 if profiled else 1, figsize=(width, 5.2), squeeze=False)
    _latency(axes[0][0], results, names)
    if profiled:
        _kinds(axes[0][1], results[0], names, top_kinds)
    text = join_lines(caption(doc), width=int(width * 16))
    fig.text(0.01, 0.01, text, fontsize=7, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_bench(doc: dict, out: str | Path, top_kinds: int = 7) -> Path:
    """Write the figure to ``out`` (format from the extension), atomically."""
    plt = _pyplot()
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    buffer = io.BytesIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "onnx-sk", "pdf.fonttype": 42}):
        fig = bench_figure(doc, top_kinds)
        try:
            fig.savefig(buffer, format=fmt, dpi=110, metadata=NO_DATE.get(fmt))
        finally:
            plt.close(fig)
    _write_atomically(buffer.getvalue(), out)
    return out


def _write_atomically(data: bytes, out: Path) -> None:
    with OutputFile(out) as output:  # atomic, through a symlink, never over a special file
        output.stage_bytes(data)
        output.commit()


def _latency(ax: Any, results: list[dict], names: list[str]) -> None:
    width = 0.8 / len(results)
    top = max(m["latency_ms"]["p90"] for res in results for m in res["models"])
    for k, (res, colour) in enumerate(zip(results, config_colours(len(results)), strict=True)):
        p50 = [m["latency_ms"]["p50"] for m in res["models"]]
        p90 = [m["latency_ms"]["p90"] for m in res["models"]]
        xs = [i + (k - (len(results) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, p50, width, color=colour, label=config_label(res))
        ax.errorbar(
            xs,
            p50,
            yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p90, strict=True)]],
            fmt="none",
            ecolor="k",
            capsize=2,
        )
        for x, y, m in zip(xs, p90, res["models"], strict=True):
            ax.annotate(
                f"{m['speedup_p50_vs_first']:.2f}×",
                (x, y + 0.01 * top),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_ylim(0, top * 1.12)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("wall-clock p50 per run (ms), whisker p90")
    ax.set_title(f"latency per model; labels: p50 speedup vs {names[0]}", fontsize=10)
    ax.legend(fontsize=8, title="provider × threads", title_fontsize=8)


def _kinds(ax: Any, res: dict, names: list[str], top: int) -> None:
    totals: dict[str, float] = {}
    for m in res["models"]:
        for row in m["profile"]["kinds"]:
            totals[row["kind"]] = totals.get(row["kind"], 0.0) + row["ms"]
    kinds = sorted(totals, key=lambda k: -totals[k])[:top]
    colours = kind_colours(kinds)
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
        if kind == "other" and not any(values):
            continue
        ax.bar(range(len(names)), values, 0.6, bottom=bottom, color=colours[kind], label=kind)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    wall = [m["latency_ms"]["p50"] for m in res["models"]]
    ax.plot(range(len(names)), wall, "D", color="k", markersize=5, label="wall p50")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("profiled kernel time per run (ms)")
    ax.set_title(f"kernel time by kind ({config_label(res)})", fontsize=10)
    ax.text(
        0.0,
        1.08,
        textwrap.fill(WALL_NOTE, width=95),
        transform=ax.transAxes,
        fontsize=6.5,
        va="bottom",
    )
    ax.legend(
        fontsize=7, title="kind", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )
