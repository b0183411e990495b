"""``onnx-sk bench --plot``: what the figure says (speedup labels, caption, the wall/kernel note),
colours that mean one thing, PNG/SVG/PDF by extension, deterministic files, clean errors.

The benchmark document comes from a real ONNX Runtime run (a dense model and its SK version,
profiled, two thread counts); no timing is asserted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import pytest
from helpers import MODELS, assert_clean_error, run_cli
from matplotlib.container import BarContainer

import onnx_sk
from onnx_sk.cli.plot import (
    KIND_COLOURS,
    OTHER_COLOUR,
    bench_figure,
    caption,
    check_plot_path,
    config_label,
    plot_bench,
)
from onnx_sk.errors import UserError
from onnx_sk.runtime.bench import BenchOptions, bench

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("plot")
    sk = folder / "tiny_sk.onnx"
    onnx_sk.optimize(MODELS / "tiny_cnn.onnx", sk, seed=0)
    return [MODELS / "tiny_cnn.onnx", sk]


@pytest.fixture(scope="module")
def doc(models) -> dict:
    options = BenchOptions(threads=(1, 2), batch=1, warmup=1, runs=3, profile=True, profile_runs=2)
    return bench(models, options)


def _svg_text(path: Path) -> str:
    """Every text element of the SVG, joined by spaces (wrapped lines rejoin)."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return " ".join(" ".join(el.itertext()) for el in root.iter(f"{SVG}text"))


def test_svg_holds_speedups_caption_and_note(doc, tmp_path):
    out = plot_bench(doc, tmp_path / "bench.svg")
    text = _svg_text(out)
    for res in doc["results"]:
        assert config_label(res) in text
        for m in res["models"]:
            assert f"{m['speedup_p50_vs_first']:.2f}×" in text
    assert "1.00×" in text  # the baseline's own label
    env = doc["environment"]
    for phrase in caption(doc):
        assert phrase in text
    assert f"onnxruntime {env['onnxruntime']}" in text
    assert f"CPU {env['cpu_identity']}, {env['cpu_count']} logical" in text
    assert "threads 1, 2" in text
    assert "Not the same measurement: bars are ORT profiler kernel times" in text
    assert "wall p50" in text and "p50 speedup vs tiny_cnn" in text


def _bars(ax) -> dict[str, set]:
    """Legend label -> the face colours of that bar series."""
    return {
        c.get_label(): {p.get_facecolor() for p in c.patches}
        for c in ax.containers
        if isinstance(c, BarContainer)
    }


def test_colours_mean_one_thing(doc):
    fig = bench_figure(doc)
    try:
        left, right = fig.axes[:2]
        configs, kinds = _bars(left), _bars(right)
        assert list(configs) == [config_label(r) for r in doc["results"]]
        assert all(len(c) == 1 for c in configs.values()) and all(
            len(c) == 1 for c in kinds.values()
        )
        config_colours = set().union(*configs.values())
        kind_colours = set().union(*kinds.values())
        assert len(config_colours) == len(configs) and len(kind_colours) == len(kinds)
        assert not config_colours & kind_colours  # no colour in both panels
        # a kind has its fixed colour, whatever else the plot holds
        for kind, colours in kinds.items():
            if kind in KIND_COLOURS:
                assert colours == {mcolors.to_rgba(KIND_COLOURS[kind])}
        assert {"Conv (dense)", "Conv (depthwise)"} <= set(kinds)
        if "other" in kinds:
            assert kinds["other"] == {mcolors.to_rgba(OTHER_COLOUR)}
        # the wall p50 of the profiled configuration sits beside its kernel time
        (wall,) = [line for line in right.get_lines() if line.get_label() == "wall p50"]
        p50 = [m["latency_ms"]["p50"] for m in doc["results"][0]["models"]]
        assert list(wall.get_ydata()) == p50
    finally:
        plt.close(fig)


def test_format_from_extension_and_deterministic(doc, tmp_path):
    magic = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<?xml"}
    for suffix, head in magic.items():
        first = plot_bench(doc, tmp_path / f"a{suffix}").read_bytes()
        assert first.startswith(head), suffix
        assert plot_bench(doc, tmp_path / f"b{suffix}").read_bytes() == first, suffix
    assert plot_bench(doc, tmp_path / "upper.SVG").read_bytes().startswith(b"<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.pdf",
        "a.png",
        "a.svg",
        "b.pdf",
        "b.png",
        "b.svg",
        "upper.SVG",
    ]  # fmt: skip  (no temporary file left behind)


def test_unprofiled_plot_has_one_panel(models, tmp_path):
    doc = bench(models[:1], BenchOptions(batch=1, warmup=0, runs=2))
    out = plot_bench(doc, tmp_path / "one.svg")
    text = _svg_text(out)
    assert "1.00×" in text and "Not the same measurement" not in text
    assert f"onnxruntime {doc['environment']['onnxruntime']}" in text


def test_bad_plot_paths(tmp_path, models):
    with pytest.raises(UserError, match=r"expected a \.png, \.svg or \.pdf file name"):
        check_plot_path(tmp_path / "b.jpg")
    out = tmp_path / "b.jpg"
    proc = run_cli("bench", models[0], "--batch", "1", "--plot", out)
    assert_clean_error(proc, f"--plot {out}: expected a .png, .svg or .pdf file name")
    missing = tmp_path / "nope" / "b.svg"
    proc = run_cli("bench", models[0], "--batch", "1", "--plot", missing)
    assert_clean_error(proc, f"--plot folder {missing.parent} does not exist")
    assert list(tmp_path.iterdir()) == []


def test_failed_plot_leaves_no_file(doc, tmp_path):
    broken = {**doc, "environment": {}}  # no versions to caption
    with pytest.raises(KeyError):
        plot_bench(broken, tmp_path / "b.svg")
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_svg(models, tmp_path):
    out = tmp_path / "bench.svg"
    proc = run_cli("bench", *models, "--batch", "1", "--runs", "3", "--warmup", "1",
                   "--profile", "--plot", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = _svg_text(out)
    assert "onnxruntime" in text and "Not the same measurement" in text
