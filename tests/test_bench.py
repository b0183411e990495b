"""``onnx-sk bench``: every documented JSON field, interleaving, profile, bad input. No timing asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import assert_clean_error, conv_model, run_cli

from onnx_sk.errors import UserError
from onnx_sk.runtime.bench import (
    BenchOptions,
    bench,
    latency_stats,
    load_bench_model,
    memory_probe,
)

ENV_FIELDS = {"onnx_sk", "onnxruntime", "onnx", "numpy", "python", "platform", "cpu", "cpu_identity",
              "cpu_count", "available_providers"}  # fmt: skip
SETTINGS_FIELDS = {"providers", "threads", "batch", "input_shapes", "warmup", "runs", "seconds",
                   "opt_level", "profile", "seed"}  # fmt: skip
MODEL_FIELDS = {"name", "path", "file_bytes", "params", "macs", "batch", "inputs"}
RESULT_FIELDS = {"provider", "threads", "memory_method", "models"}
ROW_FIELDS = {"name", "runs", "latency_ms", "throughput_per_s", "speedup_vs_first",
              "speedup_p50_vs_first", "memory_bytes", "profile"}  # fmt: skip
LATENCY_FIELDS = {"p50", "p90", "p99", "min", "mean", "max"}
PROFILE_FIELDS = {"total_ms", "op_types", "kinds", "nodes"}
NODE_FIELDS = {"name", "origin", "op_type", "kind", "provider", "ms"}


@pytest.fixture
def two_models(tmp_path: Path, rng) -> list[Path]:
    paths = []
    for i, c in enumerate((8, 16)):
        w = rng.standard_normal((c, 4, 3, 3)).astype(np.float32)
        model = conv_model(w, np.zeros(c), attrs={"pads": [1, 1, 1, 1]}, dims=("N", None, 12, 12))
        paths.append(tmp_path / f"m{i}.onnx")
        onnx.save(model, paths[-1])
    return paths


def _check_doc(doc: dict, n_models: int, threads: list[int], profile: bool) -> None:
    assert set(doc) == {"environment", "settings", "models", "results"}
    assert set(doc["environment"]) == ENV_FIELDS
    assert doc["environment"]["onnxruntime"] == ort.__version__
    assert set(doc["settings"]) == SETTINGS_FIELDS
    assert [set(m) for m in doc["models"]] == [MODEL_FIELDS] * n_models
    assert [r["threads"] for r in doc["results"]] == threads
    for res in doc["results"]:
        assert set(res) == RESULT_FIELDS
        assert len(res["models"]) == n_models
        for i, row in enumerate(res["models"]):
            assert set(row) == ROW_FIELDS
            lat = row["latency_ms"]
            assert set(lat) == LATENCY_FIELDS
            assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
            assert lat["min"] <= lat["mean"] <= lat["max"]
            batch = doc["models"][i]["batch"]
            assert row["throughput_per_s"] == pytest.approx(batch * 1e3 / lat["mean"])
            assert row["memory_bytes"] is None or row["memory_bytes"] >= 0
            if i == 0:
                assert row["speedup_vs_first"] == 1.0 == row["speedup_p50_vs_first"]
            if profile:
                prof = row["profile"]
                assert set(prof) == PROFILE_FIELDS
                assert all(set(n) == NODE_FIELDS for n in prof["nodes"])
                conv = [n for n in prof["nodes"] if n["origin"] == "conv"]
                assert conv and conv[0]["kind"] == "Conv (dense)"
                assert sum(r["share"] for r in prof["op_types"]) == pytest.approx(1.0)
                assert sum(r["ms"] for r in prof["kinds"]) == pytest.approx(prof["total_ms"])
            else:
                assert row["profile"] is None


def test_bench_library_every_field(two_models):
    options = BenchOptions(threads=(1, 2), warmup=1, runs=4, profile=True, profile_runs=3)
    doc = bench(two_models, options)
    _check_doc(doc, 2, [1, 2], profile=True)
    assert [r["runs"] for r in doc["results"][0]["models"]] == [4, 4]
    assert doc["models"][0]["macs"] == 8 * 4 * 9 * 12 * 12
    assert doc["models"][1]["inputs"] == {"x": [1, 4, 12, 12]}


def test_bench_batch_and_seconds(two_models):
    doc = bench(two_models, BenchOptions(batch=3, warmup=0, seconds=0.05))
    _check_doc(doc, 2, [1], profile=False)
    assert doc["models"][0]["inputs"] == {"x": [3, 4, 12, 12]}
    assert doc["models"][0]["macs"] == 3 * 8 * 4 * 9 * 12 * 12
    assert doc["results"][0]["models"][0]["runs"] >= 3


def test_bench_cli_json_plot(two_models, tmp_path):
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    proc = run_cli("bench", *two_models, "--runs", "3", "--warmup", "1", "--threads", "1",
                   "--profile", "--json-out", out, "--plot", png)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _check_doc(json.loads(out.read_text()), 2, [1], profile=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "CPUExecutionProvider × 1 thread(s)" in proc.stdout and "onnxruntime" in proc.stdout
    # --json: the document on stdout and nothing else there
    proc = run_cli("bench", *two_models, "--runs", "3", "--warmup", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    _check_doc(json.loads(proc.stdout), 2, [1], profile=False)


def test_unavailable_provider_lists_available(two_models):
    proc = run_cli("bench", two_models[0], "--provider", "NopeExecutionProvider")
    available = ", ".join(ort.get_available_providers())
    assert_clean_error(
        proc,
        f"execution provider 'NopeExecutionProvider' is not available in this onnxruntime "
        f"({ort.__version__}); available: {available}",
    )


def test_runs_and_seconds_refused(two_models):
    proc = run_cli("bench", two_models[0], "--runs", "3", "--seconds", "1")
    assert_clean_error(proc, "give --runs or --seconds, not both")


def test_bad_threads_and_symbolic_input(tmp_path, rng, two_models):
    assert_clean_error(run_cli("bench", two_models[0], "--threads", "1,x"),
                        "--threads '1,x': expected positive integers like 1,2")  # fmt: skip
    path = tmp_path / "sym.onnx"
    onnx.save(conv_model(rng.standard_normal((4, 4, 3, 3)).astype(np.float32)), path)
    with pytest.raises(
        UserError, match=r"input 'x' has a symbolic dim \[1, 4, -1, -1\]: give --input-shape x:DIMS"
    ):
        bench([path], BenchOptions(runs=1))
    doc = bench([path], BenchOptions(runs=1, warmup=0, input_shapes={"x": (1, 4, 9, 9)}))
    assert doc["models"][0]["inputs"] == {"x": [1, 4, 9, 9]}


def test_model_the_provider_cannot_run(tmp_path, rng):
    # a valid model with an op of a custom domain no provider implements: ORT refuses it at
    # session creation (a conv whose weight does not match its input is refused at load now)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    custom = onnx.helper.make_node("Mystery", ["y"], ["z"], name="m", domain="com.example")
    model = conv_model(w, dims=(1, 4, 8, 8))
    model.graph.node.append(custom)
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    model.graph.output[0].name = "z"
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    with pytest.raises(UserError, match=r"bad.onnx: CPUExecutionProvider cannot run this model: "):
        bench([path], BenchOptions(runs=1))


def test_latency_stats_percentiles():
    stats = latency_stats([0.001 * i for i in range(1, 101)], batch=2)
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["min"] == pytest.approx(1.0) and stats["max"] == pytest.approx(100.0)
    assert stats["throughput_per_s"] == pytest.approx(2e3 / 50.5)


def test_memory_probe_feeds_an_input_named_like_a_savez_keyword(tmp_path):
    """The probe process gets every feed, whatever its name (``np.savez(**feeds)`` took an input
    named ``allow_pickle`` for its own keyword and dropped it)."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["allow_pickle"], ["y"], name="relu")],
        "g",
        [onnx.helper.make_tensor_value_info("allow_pickle", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    model = load_bench_model(path, BenchOptions())
    extra, method = memory_probe(model, "CPUExecutionProvider", 1, "disabled")
    assert extra is not None, method
