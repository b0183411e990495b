"""Tables take the terminal's width: at 80 columns nothing is wider than 80, optional columns
are dropped with a caption saying which, and conv names stay whole."""

from __future__ import annotations

from helpers import MODELS, run_cli
from rich.cells import cell_len

from onnx_sk.graph.analyze import analyze

MODEL = MODELS / "resnet20_cifar.onnx"


def test_analyze_table_fits_80_columns():
    proc = run_cli("analyze", MODEL, columns=80)
    assert proc.returncode == 0, proc.stderr
    table_lines = [line for line in proc.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert table_lines and max(cell_len(line) for line in table_lines) <= 80
    assert (
        "not shown at this width: field, stride, group, MACs / sample, kernel, params, kind (see --json)"
        in proc.stdout
    )
    assert "/layers/layers.0/conv1/Conv" in proc.stdout  # names up to a third of the width whole
    assert proc.stdout.splitlines()[0] == "resnet20_cifar.onnx: 21 convs"  # a short title


def test_analyze_table_uses_a_wide_terminal():
    proc = run_cli("analyze", MODEL, columns=200)
    assert proc.returncode == 0, proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.startswith("┃"))
    assert all(c in header for c in ("stride", "group", "field", "MACs", "kernel"))
    assert "not shown at this width" not in proc.stdout
    for row in analyze(MODEL)["convs"]:
        assert row["name"] in proc.stdout


def test_optimize_table_folds_at_80_columns(tmp_path):
    proc = run_cli("optimize", MODEL, tmp_path / "o.onnx", columns=80)
    assert proc.returncode == 0, proc.stderr
    table_lines = [line for line in proc.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(cell_len(line) for line in table_lines) <= 80
    assert "not shown at this width: MACs, init error (see --json)" in proc.stdout
