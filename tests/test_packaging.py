"""Packaging: the Apache-2.0 LICENSE (full text) and ``py.typed`` ship in the wheel; metadata has
classifiers and keywords; the ``torch`` extra is a range, pinned exactly only by CI's constraints
file, which .ci/run (and so the README's test command) uses; Quick start writes into an ignored
folder."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser

import pytest
from helpers import ROOT
from packaging.requirements import Requirement
from packaging.version import Version
from test_readme import SETUP

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")

# md5 of the Apache License 2.0 text as published (LICENSE-2.0.txt; Debian ships the same bytes
# as /usr/share/common-licenses/Apache-2.0)
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _constraints() -> dict[str, Requirement]:
    lines = (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {r.name: r for r in reqs}


def test_license_is_the_full_apache_text():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply" in text
    assert hashlib.md5((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_MD5
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]


def test_metadata_classifiers_keywords_and_typed():
    assert "Typing :: Typed" in PROJECT["classifiers"]
    assert any(c.startswith("Topic :: ") for c in PROJECT["classifiers"])
    assert {"onnx", "onnxruntime"} <= set(PROJECT["keywords"])
    assert (ROOT / "onnx_sk" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["onnx_sk"]


def test_extras_take_ranges_and_ci_pins_torch():
    extras = {
        Requirement(r).name: Requirement(r)
        for reqs in PROJECT["optional-dependencies"].values()
        for r in reqs
    }
    assert all(s.operator != "==" for r in extras.values() for s in r.specifier), extras
    pins = _constraints()
    torch_pin = pins["torch"]
    (spec,) = torch_pin.specifier
    assert spec.operator == "==" and spec.version == "2.13.0"
    # the range admits the pin (and its local CPU build); onnx-sk installs beside other torches
    for version in ("2.13.0", "2.13.0+cpu"):
        assert extras["torch"].specifier.contains(Version(version))
    assert not extras["torch"].specifier.contains(Version("3.0"))
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install = [line for line in ci if "-e '.[dev,torch,plot]'" in line]
    assert install == [".venv/bin/pip install -c .ci/constraints.txt -e '.[dev,torch,plot]'"]


def test_quick_start_writes_into_an_ignored_folder():
    words = SETUP.split()
    out = words[words.index("optimize") + 2]
    assert out.startswith("out/") and "mkdir -p out" in SETUP
    ignored = subprocess.run(["git", "check-ignore", "-q", out], cwd=ROOT)
    assert ignored.returncode == 0, f"{out} is not ignored by git"


def test_wheel_ships_license_and_py_typed(tmp_path):
    """Build the wheel (pip, isolated build) from the tracked files and read what it holds."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    src = tmp_path / "src"
    for name in files:
        if name.startswith(("onnx_sk/", "pyproject.toml", "README.md", "LICENSE")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("onnx_sk-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "onnx_sk/py.typed" in names
        (license_name,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert hashlib.md5(zf.read(license_name)).hexdigest() == APACHE_2_MD5
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(zf.read(meta_name).decode())
    assert meta["License-Expression"] == "Apache-2.0"
    assert "Typing :: Typed" in meta.get_all("Classifier")
    torch_req = [r for r in meta.get_all("Requires-Dist") if r.startswith("torch")]
    assert torch_req == ['torch<3,>=2.2; extra == "torch"']
