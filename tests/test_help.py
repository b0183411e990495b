"""The commands' help: choices of closed-set options shown and completed, option panels, one
example per command, no stray markup."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import typer.main
from helpers import CLI, MODELS, assert_clean_error, run_cli

from onnx_sk.cli.app import app
from onnx_sk.maths.designs import DESIGNS
from onnx_sk.maths.weight_init import INITIALISERS
from onnx_sk.options import choices_of, option_fields
from onnx_sk.passes.objectives import OBJECTIVES
from onnx_sk.passes.widen import BUDGETS, WIDEN_INITS
from onnx_sk.pipeline import MODES

COMMANDS = (
    "analyze", "bench", "compare", "efficiency", "export-torch", "optimize", "profile-lut", "search",
)  # fmt: skip


def _help(command: str) -> str:
    env = {**os.environ, "COLUMNS": "250"}
    proc = subprocess.run(
        [*CLI, command, "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _words(text: str) -> str:
    """The help's text without box drawing, whitespace collapsed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_an_example(command):
    assert f"Example: onnx-sk {command} " in _words(_help(command))


def test_optimize_shows_the_choices_and_the_panels():
    text = _help("optimize")
    for metavar in (
        f"[{'|'.join((*DESIGNS, 'none'))}]",
        "[params|macs|latency]",
        f"[{'|'.join(INITIALISERS)}]",
        "[conv|all]",
        "[he|preserve]",
        "[reduce|widen]",
    ):
        assert metavar in text, metavar
    for panel in (
        "Run",
        "Reduce (Mode 1)",
        "Latency objective",
        "Weights and fitting",
        "Widen (Mode 2)",
        "Recovery (distillation)",
    ):
        assert f"╭─ {panel} ─" in text
    # --init's default depends on the mode (he where widen has no kernel to fit): said in words
    flat = " ".join(text.replace("│", " ").split())
    assert "Default: approx, and he in --mode widen --widen-init he" in flat


def test_other_commands_show_their_choices():
    assert "[all|extended|basic|disabled]" in _help("bench")
    assert "[start|full|any]" in _help("search")


def test_choices_are_the_owners_registries():
    fields = {f.name: f for _, f in option_fields()}
    assert choices_of(fields["design"]) == (*DESIGNS, "none")
    assert set(choices_of(fields["objective"])) == set(OBJECTIVES)
    assert choices_of(fields["init"]) == tuple(INITIALISERS)
    assert choices_of(fields["budget"]) == tuple(BUDGETS)
    assert choices_of(fields["widen_init"]) == tuple(WIDEN_INITS)
    assert choices_of(fields["mode"]) == tuple(MODES)
    assert choices_of(fields["seed"]) is None


def test_choices_complete_in_the_shell():
    command = typer.main.get_command(app).commands["optimize"]
    ctx = command.make_context("optimize", ["a.onnx", "b.onnx"], resilient_parsing=True)
    params = {p.name: p for p in command.params}
    assert [c.value for c in params["init"].shell_complete(ctx, "a")] == ["approx"]
    assert [c.value for c in params["design"].shell_complete(ctx, "pw")] == [
        "pw-dw-pw",
        "pwg-dw-pwg",
    ]
    assert [c.value for c in params["objective"].shell_complete(ctx, "")] == [
        "params", "macs", "latency",
    ]  # fmt: skip


def test_a_bad_choice_keeps_the_owners_one_line_error(tmp_path):
    assert_clean_error(
        run_cli(
            "optimize", MODELS / "resnet20_cifar.onnx", tmp_path / "o.onnx", "--init", "xavier"
        ),
        f"--init 'xavier': expected one of {', '.join(INITIALISERS)}",
    )


def test_no_stray_markup():
    assert "Needs PyTorch: pip install 'onnx-sk[torch]'." in _words(_help("export-torch"))
    text = _words(_help("profile-lut"))
    assert (
        "``" not in text
        and "then optimize --objective latency --lut FILE --lut-from-target" in text
    )
