"""Algorithm 1 run for real: counts, the papers' four designs and their witnesses, the CLI."""

from __future__ import annotations

import json
import re

import pytest

from onnx_sk.cli import main
from onnx_sk.maths.designs import GC, PW, PWG
from onnx_sk.maths.infofield import field_of_conv, field_of_stages
from onnx_sk.maths.search import (
    DEFAULT_CHANNELS,
    LETTERS,
    PAPER_DESIGNS,
    REASONS,
    passing_choices,
    search,
    sequences,
)
from onnx_sk.maths.spec import ConvSpec

C = DEFAULT_CHANNELS
TOTAL_6 = sum(4**n for n in range(1, 7))


@pytest.fixture(scope="module")
def results():
    return {
        (regex, b): search(C, 6, regex=regex, bottleneck=b)
        for regex in ("start", "full", "any")
        for b in (False, True)
    }


def test_removal_counts_sum_to_the_design_space(results):
    for result in results.values():
        assert result.total == TOTAL_6 == 5460
        assert set(result.removed) == set(REASONS)
        assert sum(result.removed.values()) + len(result.survivors) == result.total
        assert len(result.fate) == result.total
        for reason in REASONS:
            assert sum(1 for f in result.fate.values() if f == reason) == result.removed[reason]


def test_composition_rule_readings():
    pattern = re.compile(r"(.+?)\1+")
    space = sequences(("GC", "DW", "PW", "PWG"), 6)
    words = ["".join(LETTERS[k] for k in seq) for seq in space]
    start = search(C, 6, regex="start")
    full = search(C, 6, regex="full")
    assert start.removed["composition"] == sum(1 for w in words if pattern.match(w)) == 1664
    assert full.removed["composition"] == sum(1 for w in words if pattern.fullmatch(w)) == 104
    # re.match removes prefix squares: PPD goes, DPP stays; fullmatch keeps PPD
    assert start.fate[(PW, PW, "DW")] == "composition"
    assert full.fate[(PW, PW, "DW")] != "composition"
    assert start.fate[("DW", PW, PW)] != "composition"


def test_the_papers_four_designs_survive_with_the_bottleneck(results):
    for regex in ("start", "full", "any"):
        result = results[(regex, True)]
        names = {s.kernels: s for s in result.survivors}
        for seq, paper in PAPER_DESIGNS.items():
            assert seq in names, (regex, seq)
            assert names[seq].paper == paper
        assert result.paper_missing == ()


def test_pw_dw_pw_needs_the_bottleneck(results):
    plain = results[("start", False)]
    assert plain.paper_missing == ("pw-dw-pw",)
    assert plain.fate[(PW, "DW", PW)] == "no_growth"  # the last PW does not grow (3, 3, C)
    pw_dw_pw = next(s for s in results[("start", True)].survivors if s.paper == "pw-dw-pw")
    assert [(st.c_in, st.c_out) for st in pw_dw_pw.witness] == [
        (C, C // 4),
        (C // 4, C // 4),
        (C // 4, C),
    ]
    assert pw_dw_pw.params == (C // 4) * (C + 9 + C)


def test_witnesses_of_gc_pwg_and_pwg_dw_pwg_carry_their_shuffles(results):
    names = {s.kernels: s for s in results[("start", True)].survivors}
    gc_pwg = names[(GC, PWG)].witness
    assert gc_pwg[0].shuffle > 1 and gc_pwg[0].group * gc_pwg[1].group <= C
    pwg_dw_pwg = names[(PWG, "DW", PWG)].witness
    assert any(st.shuffle > 1 for st in pwg_dw_pwg[:-1])
    k = pwg_dw_pwg[1].c_out
    assert pwg_dw_pwg[0].group * pwg_dw_pwg[2].group <= k
    # every passing choice: a shuffle and M·N ≤ (intermediate width)
    for b in (False, True):
        for stages in passing_choices((GC, PWG), C, b):
            assert stages[0].shuffle > 1 and stages[0].group * stages[1].group <= stages[0].c_out
        for stages in passing_choices((PWG, "DW", PWG), C, b):
            assert sum(st.shuffle > 1 for st in stages) == 1
            assert stages[0].group * stages[2].group <= stages[1].c_out


def test_every_witness_has_the_dense_field_and_grows_at_every_kernel(results):
    dense = field_of_conv(ConvSpec(C, C, (3, 3)))
    for result in results.values():
        for s in result.survivors:
            assert field_of_stages(s.witness, (3, 3)).equals(dense), s.name
            sizes = [
                field_of_stages(s.witness[: i + 1], (3, 3)).size for i in range(len(s.witness))
            ]
            restores = s.witness[-1].c_in != s.witness[-1].c_out == C
            for i, (a, b) in enumerate(zip([(1, 1, 1), *sizes[:-1]], sizes, strict=True)):
                if i == len(sizes) - 1 and restores:
                    continue
                assert a != b and all(x <= y for x, y in zip(a, b, strict=True)), (s.name, sizes)


@pytest.mark.parametrize(
    ("channels", "length", "bottleneck"),
    [(8, 4, False), (8, 4, True), (12, 3, False), (12, 3, True)],
)
def test_memoised_search_agrees_with_brute_force(channels, length, bottleneck):
    result = search(channels, length, regex="full", bottleneck=bottleneck)
    survivors = {s.kernels: s for s in result.survivors}
    for seq, fate in result.fate.items():
        brute = passing_choices(seq, channels, bottleneck)
        if fate == "survived":
            assert len(brute) == survivors[seq].choices, seq
            assert (
                min(sum(st.weight_params((3, 3)) for st in p) for p in brute)
                == survivors[seq].params
            )
        elif fate != "composition":
            assert brute == [], seq


def test_mirror_pairs_are_marked(results):
    names = {s.kernels: s for s in results[("start", False)].survivors}
    assert names[("DW", PW)].mirror == "PW+DW" and names[(PW, "DW")].mirror == "DW+PW"
    assert names[(GC, PWG)].mirror == "PWG+GC"
    assert names[(PWG, "DW", PWG)].mirror is None  # a palindrome


def test_cli_json(capsys):
    assert main(["search", "--max-length", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"] == 4 + 16 + 64
    assert sum(doc["removed"].values()) + doc["survived"] == doc["total"]
    assert {"DW+PW", "GC+PWG"} <= {s["design"] for s in doc["survivors"]}
    assert main(["search", "--bottleneck", "--kernels", "PW,DW", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"] == sum(2**n for n in range(1, 7))
    assert {s["design"] for s in doc["survivors"]} >= {"PW+DW+PW", "DW+PW"}


def test_cli_table(capsys):
    assert main(["search", "--max-length", "2"]) == 0
    out = capsys.readouterr().out
    assert "GC+PWG" in out and "shuffle(" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--channels", "7"], "composite"),
        (["--channels", "6", "--bottleneck"], "divisible by 4"),
        (["--max-length", "0"], "at least 1"),
        (["--kernels", "GC,FOO"], "unknown kernel type"),
        (["--kernels", "PW,PW"], "repeated"),
        (["--regex", "middle"], "--regex must be one of"),
    ],
)
def test_bad_options_exit_2_with_a_message(capsys, argv, message):
    assert main(["search", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
