"""--objective latency: candidates, the Gather shuffle, the LUT (round trip, stale, bad), choices.

Choices are tested on hand-written LUTs (numbers chosen by the test, no timing asserted); one
test measures for real and checks only invariants of the result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import assert_clean_error, conv_model, run_cli

from onnx_sk.errors import UserError
from onnx_sk.graph.build import replace_conv
from onnx_sk.graph.fields import field_between
from onnx_sk.maths.designs import DESIGNS, dense_equivalent
from onnx_sk.maths.infofield import field_of_conv, field_of_stages
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.maths.weight_init import he_init
from onnx_sk.pipeline import optimize
from onnx_sk.runtime import lut as lut_module
from onnx_sk.runtime.latency import (
    CAPACITY_SLACK,
    MAX_ROUNDS,
    MIN_ROUNDS,
    MIN_SPEEDUP,
    _blocked,
    candidate_key,
    candidates,
    decide,
    measure_shape,
    shape_key,
)
from onnx_sk.runtime.lut import FORMAT, VERSION, Lut, load_lut, this_machine
from onnx_sk.runtime.profile_lut import profile_lut
from onnx_sk.runtime.session import session

SPEC = ConvSpec(32, 32, (3, 3), pads=(1, 1, 1, 1), has_bias=True)
IN_SHAPE = (1, 32, 10, 10)
KEY = shape_key(SPEC, IN_SHAPE, 0.25)


def test_candidates_keep_the_field_and_cut_macs():
    cands = candidates(SPEC, 0.25)
    want = field_of_conv(SPEC)
    designs = {c.design for c in cands}
    assert designs == set(DESIGNS)  # every registered design has a candidate
    for c in cands:
        assert field_of_stages(c.stages, SPEC.kernel_shape, SPEC.strides, SPEC.dilations).equals(
            want
        )
        assert c.macs_per_output_pixel() < SPEC.weight_params
    shuffled = [c for c in cands if c.shuffles]
    assert (
        shuffled and sorted(c.shuffle_impl for c in shuffled).count("gather") == len(shuffled) // 2
    )
    assert len({candidate_key(c) for c in cands}) == len(cands)
    assert any(_blocked(c, 8) and c.shuffles for c in cands)


@pytest.mark.parametrize("design", ["gc-pwg", "pwg-dw-pwg"])
def test_gather_shuffle_matches_dense_equivalent_and_keeps_field(design, rng):
    real = next(
        c for c in candidates(SPEC, 0.25) if c.design == design and c.shuffle_impl == "gather"
    )
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    model = conv_model(w, b, attrs={"pads": [1, 1, 1, 1]}, dims=(1, None, 10, 10))
    weights = he_init(real, w, b, rng)
    replace_conv(model.graph, "y", real, weights, real.shuffle_impl)
    sk = model
    onnx.checker.check_model(sk, full_check=True)
    assert [n.op_type for n in sk.graph.node].count("Gather") == real.shuffles
    assert "Transpose" not in [n.op_type for n in sk.graph.node]
    assert field_between(sk.graph, "x", "y").equals(field_of_conv(SPEC))
    twin = conv_model(dense_equivalent(real.stages, weights).astype(np.float32), b,
                      attrs={"pads": [1, 1, 1, 1]}, dims=(1, None, 10, 10))  # fmt: skip
    x = {"x": rng.standard_normal(IN_SHAPE).astype(np.float32)}
    got, want = session(sk).run(None, x)[0], session(twin).run(None, x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _entry(speedups: dict[str, float]) -> dict:
    """A LUT entry for SPEC with the given speedups (others 0.5×), as measure_shape writes it."""
    cands = {}
    for c in candidates(SPEC, 0.25):
        key = candidate_key(c)
        cands[key] = {"design": c.design, "groups": c.group_dict, "bottleneck": c.bottleneck,
                      "shuffle": c.shuffle_impl if c.shuffles else None, "macs_ratio": 0.1,
                      "ms": 1.0 / speedups.get(key, 0.5), "speedup": speedups.get(key, 0.5)}  # fmt: skip
    return {"provider": "CPUExecutionProvider", "threads": 1, "shape": {}, "dense_ms": 1.0,
            "rounds": 7, "candidates": cands}  # fmt: skip


@pytest.fixture
def two_conv_model(tmp_path: Path, rng) -> Path:
    """x → Conv 3→32 (first, kept) → Conv 32→32 (SPEC) → y, static 1×3×10×10."""
    stem = onnx.numpy_helper.from_array(rng.standard_normal((32, 3, 3, 3)).astype(np.float32), "w0")
    model = conv_model(
        rng.standard_normal((32, 32, 3, 3)).astype(np.float32), rng.standard_normal(32),
        attrs={"pads": [1, 1, 1, 1]}, dims=(1, 3, 10, 10),
    )  # fmt: skip
    g = model.graph
    g.initializer.append(stem)
    g.node[0].input[0] = "h"
    g.node.insert(
        0, onnx.helper.make_node("Conv", ["x", "w0"], ["h"], name="stem", pads=[1, 1, 1, 1])
    )
    path = tmp_path / "two.onnx"
    onnx.save(model, path)
    return path


def _write_lut(path: Path, entry: dict, machine: dict | None = None) -> Path:
    lut = Lut(machine or this_machine())
    lut.put("CPUExecutionProvider", 1, KEY, entry)
    lut.save(path)
    return path


def test_lut_round_trip(tmp_path):
    entry = _entry({})
    path = _write_lut(tmp_path / "lut.json", entry)
    back = load_lut(path)
    assert back.get("CPUExecutionProvider", 1, KEY) == entry
    assert back.get("CPUExecutionProvider", 2, KEY) is None
    assert back.machine == this_machine() and not back.foreign
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["version"], doc["onnxruntime"]) == (FORMAT, VERSION, ort.__version__)


def test_latency_picks_fastest_with_gather(two_conv_model, tmp_path):
    fast = next(candidate_key(c) for c in candidates(SPEC, 0.25) if c.shuffle_impl == "gather")
    lut = _write_lut(tmp_path / "lut.json", _entry({fast: 3.0, "dw-pw": 2.0}))
    before = lut.read_bytes()
    # the table is the target's: no network check (passes.latency_guard) overrides it
    model, report = optimize(
        two_conv_model, tmp_path / "out.onnx", objective="latency", lut=lut, lut_from_target=True
    )
    row = {r["name"]: r for r in report.convs}
    assert row["stem"]["reason"].startswith("first conv")
    assert row["conv"]["design"] == fast.split()[0]
    assert f"3.00×, {fast})" in row["conv"]["note"]
    assert "Gather" in [n.op_type for n in model.graph.node]
    assert report.verification["fields_checked"] == 1
    assert lut.read_bytes() == before  # nothing measured: the LUT is unchanged


def test_latency_never_replaces_with_something_slower(two_conv_model, tmp_path):
    lut = _write_lut(tmp_path / "lut.json", _entry({"dw-pw": MIN_SPEEDUP * 0.99}))
    _, report = optimize(two_conv_model, None, objective="latency", lut=lut, lut_from_target=True)
    row = next(r for r in report.convs if r["name"] == "conv")
    assert row["design"] is None
    assert row["reason"] == "no SK design is faster than the dense conv on CPUExecutionProvider"
    assert row["note"].startswith("best measured: latency on CPUExecutionProvider, 1 thread:")


def test_stale_lut_refused(two_conv_model, tmp_path):
    other = {"onnxruntime": "0.9.0", "cpu": "Some Other CPU (riscv64, none)"}
    lut = _write_lut(tmp_path / "stale.json", _entry({"dw-pw": 9.0}), other)
    here = this_machine()
    proc = run_cli(
        "optimize", two_conv_model, tmp_path / "o.onnx", "--objective", "latency", "--lut", lut
    )
    assert_clean_error(
        proc,
        f"{lut} is a stale latency table: measured with onnxruntime 0.9.0 on 'Some Other CPU "
        f"(riscv64, none)', this is onnxruntime {here['onnxruntime']} on {here['cpu']!r}; re-run "
        "onnx-sk profile-lut here, or pass --lut-from-target if the table describes the target device",
    )
    assert not (tmp_path / "o.onnx").exists()
    # the target's own table, said so explicitly: used, and nothing measured here
    _, report = optimize(two_conv_model, None, objective="latency", lut=lut, lut_from_target=True)
    assert next(r for r in report.convs if r["name"] == "conv")["design"] == "dw-pw"
    empty = tmp_path / "empty.json"
    Lut(other).save(empty)
    with pytest.raises(
        UserError, match="has no measurement of conv shape .* run onnx-sk profile-lut on the target"
    ):
        optimize(two_conv_model, None, objective="latency", lut=empty, lut_from_target=True)


def _lut_doc(entries: object) -> bytes:
    doc = {"format": FORMAT, "version": VERSION, "onnxruntime": "1", "cpu": "c", "entries": entries}
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (
            b"{not json",
            "invalid JSON (Expecting property name enclosed in double quotes at line 1)",
        ),
        (b'{"format": "something-else"}', 'no "format": "onnx-sk-latency-lut" field'),
        (
            b'{"format": "onnx-sk-latency-lut", "version": 99}',
            "version 99, this onnx-sk reads version 2",
        ),
        (
            b'{"format": "onnx-sk-latency-lut", "version": 1}',
            "version 1, this onnx-sk reads version 2 (version 1 timed convs alone: measure again)",
        ),
        (b'{"format": "onnx-sk-latency-lut", "version": 2}', "missing onnxruntime, cpu or entries"),
        (b"\xff\xfe\x00", "not UTF-8 text"),
        (_lut_doc({"k": []}), "entry 'k': expected an object, got list"),
        (_lut_doc({"k": {"threads": 1}}), "entry 'k': missing or invalid provider or threads"),
        (
            _lut_doc({"P|threads=1|s": {"provider": "P", "threads": 1}}),
            "entry 'P|threads=1|s': dense_ms is not a positive number",
        ),
        (
            _lut_doc({"P|threads=2|s": {"provider": "P", "threads": 1, "dense_ms": 1}}),
            "entry 'P|threads=2|s': its key does not match its provider and threads",
        ),
        (
            _lut_doc(
                {
                    "P|threads=1|s": {
                        "provider": "P",
                        "threads": 1,
                        "dense_ms": 1,
                        "candidates": {"c": {"design": "dense"}},
                    }
                }
            ),
            "entry 'P|threads=1|s': candidate 'c': design 'dense' is not one of "
            "dw-pw, gc-pwg, pw-dw-pw, pwg-dw-pwg",
        ),  # fmt: skip
        (
            _lut_doc(
                {
                    "P|threads=1|s": {
                        "provider": "P",
                        "threads": 1,
                        "dense_ms": 1,
                        "candidates": {
                            "c": {"design": "dw-pw", "groups": {}, "ms": "1", "speedup": 2}
                        },
                    }
                }
            ),
            "entry 'P|threads=1|s': candidate 'c': ms or speedup is not a positive number",
        ),  # fmt: skip
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
    ],
)
def test_bad_lut_file(two_conv_model, tmp_path, content, why):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    proc = run_cli(
        "optimize", two_conv_model, tmp_path / "o.onnx", "--objective", "latency", "--lut", bad
    )
    assert_clean_error(proc, f"{bad} is not a readable onnx-sk latency table: {why}")


def test_lut_fifo_refused_without_blocking(two_conv_model, tmp_path):
    """A FIFO as --lut is refused before it is opened (opening it would block forever)."""
    fifo = tmp_path / "lut.fifo"
    os.mkfifo(fifo)
    proc = run_cli(
        "optimize", two_conv_model, tmp_path / "o.onnx", "--objective", "latency", "--lut", fifo
    )
    assert_clean_error(
        proc,
        f"{fifo} is not a readable onnx-sk latency table: not a regular file (a FIFO, socket or "
        "device)",
    )
    assert not (tmp_path / "o.onnx").exists()


def test_lut_size_limit(tmp_path, monkeypatch):
    big = tmp_path / "big.json"
    big.write_bytes(_lut_doc({}) + b" " * 100)
    monkeypatch.setattr(lut_module, "MAX_BYTES", 64)
    with pytest.raises(UserError) as err:
        load_lut(big)
    size = big.stat().st_size
    assert str(err.value) == (
        f"{big} is not a readable onnx-sk latency table: {size} bytes, more than the 64 a "
        "latency table may have"
    )


def test_latency_flags_need_latency_objective(two_conv_model, tmp_path):
    proc = run_cli(
        "optimize",
        two_conv_model,
        tmp_path / "o.onnx",
        "--lut",
        tmp_path / "l.json",
        "--threads",
        "2",
    )
    assert_clean_error(proc, "--threads, --lut apply to --objective latency only")
    proc = run_cli("optimize", two_conv_model, tmp_path / "o.onnx", "--objective", "latency",
                   "--provider", "NopeExecutionProvider")  # fmt: skip
    assert proc.returncode == 2 and "'NopeExecutionProvider' is not available" in proc.stderr


def test_profile_lut_then_optimize_measured(two_conv_model, tmp_path):
    out = tmp_path / "lut.json"
    proc = run_cli("profile-lut", two_conv_model, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "2 conv shapes, 2 measured now, 0 already in the table" in proc.stdout
    lut = load_lut(out)
    entry = lut.get("CPUExecutionProvider", 1, KEY)
    assert entry is not None and entry["rounds"] >= 7
    assert set(entry["candidates"]) == {candidate_key(c) for c in candidates(SPEC, 0.25)}
    again = profile_lut(two_conv_model, out)
    assert again["configs"] == [
        {"provider": "CPUExecutionProvider", "threads": 1, "shapes": 2, "measured": 0}
    ]
    _, report = optimize(two_conv_model, None, objective="latency", lut=out)
    row = next(r for r in report.convs if r["name"] == "conv")
    best = max(c["speedup"] for c in entry["candidates"].values())
    if row["design"] is None:
        assert best < MIN_SPEEDUP
        assert row["reason"] == "no SK design is faster than the dense conv on CPUExecutionProvider"
    else:
        assert best >= MIN_SPEEDUP and f"{best:.2f}×" in row["note"]


def test_measure_shape_entry_fields():
    entry = measure_shape(ConvSpec(8, 8, (3, 3), pads=(1, 1, 1, 1)), (1, 8, 6, 6), "CPUExecutionProvider", 1, 0.25,
                          budget_s=0.01)  # fmt: skip
    assert set(entry) == {"provider", "threads", "shape", "dense_ms", "rounds", "candidates"}
    assert MIN_ROUNDS <= entry["rounds"] <= MAX_ROUNDS and entry["dense_ms"] > 0
    for c in entry["candidates"].values():
        assert set(c) == {
            "design",
            "groups",
            "bottleneck",
            "shuffle",
            "macs_ratio",
            "ms",
            "speedup",
        }
        assert c["ms"] > 0 and c["speedup"] > 0 and 0 < c["macs_ratio"] < 1


def _capacity_entry(dw_pw_speedup: float) -> tuple[dict, str]:
    """SPEC's entry: the fastest candidate (4×) with few weights, dw-pw (more weights) at
    ``dw_pw_speedup``."""
    fast = next(candidate_key(c) for c in candidates(SPEC, 0.25) if c.design == "pwg-dw-pwg")
    entry = _entry({fast: 4.0, "dw-pw": dw_pw_speedup})
    entry["candidates"][fast]["macs_ratio"] = 0.05
    entry["candidates"]["dw-pw"]["macs_ratio"] = 0.3
    return entry, fast


def test_recovery_prefers_weights_within_the_saving_slack():
    site = type("Site", (), {"spec": SPEC})()
    # the fastest saves 0.75 ms of 1 ms; dw-pw at 3.8× (0.263 ms) keeps 98% of that saving
    entry, fast = _capacity_entry(3.8)
    real, reason, note = decide(site, entry, None, 0.25)
    assert reason is None and real.design == "pwg-dw-pwg" and f"{fast})" in note
    real, reason, note = decide(site, entry, None, 0.25, capacity=True)
    assert reason is None and real.design == "dw-pw"
    assert note.endswith(f"the most weights keeping 90% of the fastest's saving ({fast}))")
    # at 2× (0.5 ms) dw-pw keeps only 67% of the saving: the fastest stays
    entry, fast = _capacity_entry(2.0)
    real, _, note = decide(site, entry, None, 0.25, capacity=True)
    assert real.design == "pwg-dw-pwg" and note.endswith(f"{fast})")
    assert CAPACITY_SLACK == 0.10


def test_recover_takes_latency_options_and_chooses_capacity(two_conv_model, tmp_path):
    entry, _ = _capacity_entry(3.8)
    lut = _write_lut(tmp_path / "lut.json", entry)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((8, 3, 10, 10)).astype(np.float32))
    proc = run_cli(
        "optimize", two_conv_model, tmp_path / "o.onnx", "--lut", lut, "--recover", data,
        "--recover-epochs", "1", "--report", tmp_path / "r.json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    row = next(r for r in doc["convs"] if r["name"] == "conv")
    assert doc["options"]["objective"] == "latency" and row["design"] == "dw-pw"
