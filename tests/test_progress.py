"""optimize's progress bar: on stderr when it is a terminal (a pseudo-terminal here), never
with -q, never into a pipe, never from the Python API (a callback instead)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios

import pytest
from helpers import CLI, MODELS, run_cli

import onnx_sk

MODEL = MODELS / "resnet20_cifar.onnx"
STAGES = ("load", "plan", "init-weights", "dense-twin", "reduce", "verify", "fidelity", "write")


def _on_a_terminal(tmp_path, *args: str) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal: exit code, stdout, what the terminal got."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_TERMINAL", "TTY_COMPATIBLE")}
    env.update(TERM="xterm-256color", ONNX_SK_PROGRESS_DELAY="0", COLUMNS="120")
    stdout = tmp_path / "stdout.txt"
    with open(stdout, "w") as out:
        proc = subprocess.Popen([*CLI, *args], stdout=out, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=300)
    return code, stdout.read_text(), b"".join(chunks).decode(errors="replace")


def test_bar_on_a_terminal(tmp_path):
    code, stdout, terminal = _on_a_terminal(
        tmp_path, "optimize", str(MODEL), str(tmp_path / "o.onnx"), "--init", "he"
    )
    assert code == 0, terminal
    assert "%" in terminal and any(stage in terminal for stage in STAGES), terminal
    assert "replaced 18 of 21 convs" in stdout and "\x1b[" not in stdout


def test_no_bar_with_quiet_on_a_terminal(tmp_path):
    code, stdout, terminal = _on_a_terminal(
        tmp_path, "optimize", str(MODEL), str(tmp_path / "o.onnx"), "--init", "he", "-q"
    )
    assert code == 0 and terminal == ""
    assert stdout.strip() == "replaced 18 of 21 convs"


def test_no_bar_into_a_pipe(tmp_path):
    proc = run_cli("optimize", MODEL, tmp_path / "o.onnx", "--init", "he")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "\x1b[" not in proc.stdout


def test_api_is_silent_and_reports_every_stage_to_a_callback(tmp_path, capfd):
    seen: list[tuple[float, str]] = []
    onnx_sk.optimize_model(
        MODEL,
        tmp_path / "o.onnx",
        onnx_sk.OptimizeOptions(),
        progress=lambda f, w: seen.append((f, w)),
    )
    onnx_sk.optimize(MODEL, tmp_path / "p.onnx")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    stages = [w for f, w in seen if ":" not in w]
    assert stages[0] == "load" and stages[-1] == "write"
    assert {"plan", "init-weights", "dense-twin", "reduce", "verify", "fidelity"} <= set(stages)
    fits = [w for f, w in seen if w.startswith("init-weights: ")]
    assert len(fits) == 18 and fits[0].startswith("init-weights: ") and "1/18" in fits[0]
    assert all(0.0 <= f <= 1.0 for f, _ in seen)


def test_distill_progress_feeds_the_bar_with_loss_and_eta(capsys):
    """distill's progress: a line per epoch, and on a terminal the bar: the stage's share done,
    its held-out loss and ETA (capped by --minutes)."""
    from onnx_sk.cli.distill import _Progress

    calls = []
    p = _Progress(lambda fraction, what: calls.append((fraction, what)), minutes=1.0)
    row = {"stage": "end-to-end", "epochs": 10, "train_loss": 2.0, "holdout_loss": 1.5}
    p({**row, "epoch": 1, "seconds": 10.0})
    p({**row, "epoch": 2, "seconds": 20.0})
    # 10 s per epoch, 8 epochs left: 80 s, but --minutes 1 ends the run at 60 s: 20 of 60 s done
    fraction, what = calls[-1]
    assert fraction == pytest.approx(1 / 3)
    assert what == "end-to-end epoch 2/10, held-out loss 1.5, ETA ≤ 40 s"
    assert "held-out loss 1.5 (20 s, stage ETA ≤ 40 s)" in capsys.readouterr().out
