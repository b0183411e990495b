"""Output targets: checked before anything is written, written through symlinks, never over a
special file, the report written before the model's rename, a full disk one line with nothing
left behind, and the temporary files of a killed run removed by the next write.

Special files only in a temporary folder (FIFOs via os.mkfifo, never real device files); the
disk-full cases mount a small tmpfs and run only as root.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from helpers import assert_clean_error, conv_model, run_cli

from onnx_sk.graph.save import OutputFile, remove_stale_temporaries, save_json


@pytest.fixture
def model(tmp_path: Path, rng) -> Path:
    path = tmp_path / "in.onnx"
    onnx.save(conv_model(rng.standard_normal((16, 16, 3, 3)), attrs={"pads": [1, 1, 1, 1]}), path)
    return path


def _optimize(model: Path, out: Path, *args: object) -> subprocess.CompletedProcess:
    return run_cli("optimize", model, out, "--include-first", *args)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_symlinked_output_and_report_are_written_through(model, tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    out, rep = tmp_path / "out.onnx", tmp_path / "rep.json"
    out.symlink_to(real_dir / "model.onnx")  # dangling: the target is created
    (real_dir / "report.json").write_text("old")
    rep.symlink_to(real_dir / "report.json")
    proc = _optimize(model, out, "--report", rep)
    assert proc.returncode == 0, proc.stderr
    assert out.is_symlink() and rep.is_symlink()  # the links stay links
    onnx.checker.check_model(str(real_dir / "model.onnx"), full_check=True)
    assert json.loads((real_dir / "report.json").read_text())["output"] == str(out)
    assert _leftovers(tmp_path) == [] and _leftovers(real_dir) == []


@pytest.mark.parametrize("which", ["OUT", "--report"])
def test_fifo_target_refused(model, tmp_path, which):
    fifo = tmp_path / "target.fifo"
    os.mkfifo(fifo)
    out = fifo if which == "OUT" else tmp_path / "out.onnx"
    extra = [] if which == "OUT" else ["--report", fifo]
    what = "output path" if which == "OUT" else "--report"
    assert_clean_error(
        _optimize(model, out, *extra),
        f"{what} {fifo} is not a regular file (a device, FIFO or socket): refused (onnx-sk "
        "replaces only regular files)",
    )
    assert fifo.is_fifo() and not (tmp_path / "out.onnx").exists()


def test_symlink_to_a_fifo_refused(model, tmp_path):
    fifo, link = tmp_path / "f.fifo", tmp_path / "out.onnx"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    assert_clean_error(
        _optimize(model, link),
        f"output path {link} is not a regular file (a device, FIFO or socket): refused (onnx-sk "
        "replaces only regular files)",
    )
    assert link.is_symlink() and fifo.is_fifo()


def test_report_target_checked_before_anything_is_written(model, tmp_path):
    out = tmp_path / "out.onnx"
    assert_clean_error(
        _optimize(model, out, "--report", tmp_path), f"--report {tmp_path} is a directory"
    )
    missing = tmp_path / "nope" / "r.json"
    assert_clean_error(
        _optimize(model, out, "--report", missing),
        f"--report folder {missing.parent} does not exist",
    )
    assert_clean_error(
        _optimize(model, out, "--report", out),
        f"--report {out} is the output model: choose another file",
    )
    assert not out.exists() and _leftovers(tmp_path) == []


def test_json_conventions_stdout_and_dash(model, tmp_path):
    """optimize --json prints the report to stdout; --report - too; --report FILE writes it."""
    out = tmp_path / "out.onnx"
    proc = _optimize(model, out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["output"] == str(out) and doc["totals"]["replaced"] == 1
    proc = _optimize(model, out, "--report", "-")
    assert proc.returncode == 0 and json.loads(proc.stdout)["totals"]["replaced"] == 1
    assert not (Path.cwd() / "-").exists() and not (tmp_path / "-").exists()
    rep = tmp_path / "r.json"
    proc = _optimize(model, out, "--json-out", rep)
    assert proc.returncode == 0 and "replaced 1 of 1 convs" in proc.stdout
    assert json.loads(rep.read_text())["totals"]["replaced"] == 1


def test_analyze_json_out_file_equals_json_stdout(model, tmp_path):
    rep = tmp_path / "a.json"
    to_file = run_cli("analyze", model, "--json-out", rep)
    to_stdout = run_cli("analyze", model, "--json")
    assert to_file.returncode == 0 and to_stdout.returncode == 0
    assert json.loads(rep.read_text()) == json.loads(to_stdout.stdout)
    assert "1 convs" in to_file.stdout  # the table still printed
    dash = run_cli("analyze", model, "--json-out", "-")
    assert json.loads(dash.stdout) == json.loads(to_stdout.stdout)


def test_stale_temporaries_of_a_killed_run_are_removed_live_ones_kept(model, tmp_path):
    out = tmp_path / "out.onnx"
    stale = tmp_path / f".{out.name}.0123456789ab.tmp"
    stale_data = tmp_path / f".{out.name}.data.0123456789ab.tmp"
    orphan_data = tmp_path / f".{out.name}.data.ba9876543210.tmp"
    live = tmp_path / f".{out.name}.aaaaaaaaaaaa.tmp"
    other = tmp_path / ".other.onnx.0123456789ab.tmp"  # not this OUT's
    young = tmp_path / f".{out.name}.bbbbbbbbbbbb.tmp"  # just created: its writer may lock it next
    for p in (stale, stale_data, orphan_data, live, other, young):
        p.write_bytes(b"x" * 100)
        if p != young:
            os.utime(p, (time.time() - 60, time.time() - 60))
    with open(live, "rb") as fh:  # a run still writing holds the lock
        fcntl.flock(fh, fcntl.LOCK_EX)
        proc = _optimize(model, out)
        assert proc.returncode == 0, proc.stderr
        assert _leftovers(tmp_path) == sorted([live.name, other.name, young.name])
    assert remove_stale_temporaries(out) == [live]  # its writer is gone now


def test_outputfile_discards_and_unlocks(tmp_path):
    with OutputFile(tmp_path / "m.onnx") as output:
        output.stage_bytes(b"data")
        assert output.tmp.exists()
    assert _leftovers(tmp_path) == []
    save_json({"a": 1}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


@contextlib.contextmanager
def _full_disk(tmp_path: Path):
    """A 64 KiB tmpfs filled to the last byte (root only; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        with contextlib.suppress(OSError), open(mnt / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_on_output(model, tmp_path):
    with _full_disk(tmp_path) as full:
        out = full / "out.onnx"
        assert_clean_error(
            _optimize(model, out), f"cannot write {out}: No space left on device (nothing written)"
        )
        assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_disk_full_on_report_writes_no_model(model, tmp_path):
    out = tmp_path / "out.onnx"
    with _full_disk(tmp_path) as full:
        rep = full / "r.json"
        assert_clean_error(
            _optimize(model, out, "--report", rep),
            f"cannot write {rep}: No space left on device (nothing written)",
        )
        assert sorted(p.name for p in full.iterdir()) == ["filler"]
    assert not out.exists() and _leftovers(tmp_path) == []


def test_disk_full_on_lut(tmp_path, rng):
    model = tmp_path / "m.onnx"
    w = rng.standard_normal((8, 8, 3, 3))
    onnx.save(conv_model(w, attrs={"pads": [1, 1, 1, 1]}, dims=(1, 8, 6, 6)), model)
    with _full_disk(tmp_path) as full:
        lut = full / "lut.json"
        assert_clean_error(
            run_cli("profile-lut", model, "--out", lut),
            f"cannot write {lut}: No space left on device (nothing written)",
        )
        assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_report_rolled_back_when_the_model_rename_fails(model, tmp_path, monkeypatch, capsys):
    """The report is written before OUT's rename; if that rename fails the report goes too."""
    from onnx_sk.cli import main
    from onnx_sk.graph import save

    def failing_replace(src, dst):
        if str(dst).endswith("out.onnx"):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    real_replace = os.replace
    monkeypatch.setattr(save.os, "replace", failing_replace)
    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    code = main(["optimize", str(model), str(out), "--include-first", "--report", str(rep)])
    assert code == 2
    assert (
        capsys.readouterr().err
        == f"error: cannot write {out}: Input/output error (nothing written)\n"
    )
    assert not out.exists() and not rep.exists() and _leftovers(tmp_path) == []


def test_socket_target_refused(model, tmp_path):
    import socket

    path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        assert_clean_error(
            _optimize(model, path),
            f"output path {path} is not a regular file (a device, FIFO or socket): refused "
            "(onnx-sk replaces only regular files)",
        )
        assert path.is_socket()
    finally:
        sock.close()


def test_json_out_and_plot_fifo_refused_up_front(model, tmp_path):
    fifo_json, fifo_png = tmp_path / "a.json", tmp_path / "p.png"
    os.mkfifo(fifo_json)
    os.mkfifo(fifo_png)
    refused = "is not a regular file (a device, FIFO or socket): refused (onnx-sk replaces only regular files)"
    assert_clean_error(
        run_cli("analyze", model, "--json-out", fifo_json), f"--json-out {fifo_json} {refused}"
    )
    assert_clean_error(run_cli("bench", model, "--plot", fifo_png), f"--plot {fifo_png} {refused}")
    assert_clean_error(
        run_cli("profile-lut", model, "--out", fifo_json, "--input-shape", "x:1x16x8x8"),
        f"{fifo_json} is not a readable onnx-sk latency table: not a regular file (a FIFO, socket "
        "or device)",
    )
    assert fifo_json.is_fifo() and fifo_png.is_fifo()


def test_export_torch_fifo_refused(model, tmp_path):
    pytest.importorskip("torch")
    fifo = tmp_path / "m.pt"
    os.mkfifo(fifo)
    assert_clean_error(
        run_cli("export-torch", model, fifo),
        f"output path {fifo} is not a regular file (a device, FIFO or socket): refused (onnx-sk "
        "replaces only regular files)",
    )
    assert fifo.is_fifo()


def test_temporary_file_of_a_sigkilled_writer_is_removed_by_the_next_run(model, tmp_path):
    """A writer killed with SIGKILL (the OOM killer) leaves its locked temporary file; the kill
    releases the lock, and the next run to the same OUT removes the file."""
    out = tmp_path / "out.onnx"
    code = (
        "import os, signal, sys; from onnx_sk.graph.save import OutputFile; "
        "o = OutputFile(sys.argv[1]); o.stage_bytes(b'x' * 1_000_000); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True)
    assert proc.returncode == -9
    (left,) = _leftovers(tmp_path)
    assert re.fullmatch(r"\.out\.onnx\.[0-9a-f]{12}\.tmp", left)
    os.utime(tmp_path / left, (time.time() - 60, time.time() - 60))
    assert _optimize(model, out).returncode == 0
    assert _leftovers(tmp_path) == [] and out.exists()
