"""Prepare (once, cached) an arm64 sysroot in which ONNX Runtime's aarch64 wheel runs under
``qemu-aarch64`` user-mode emulation on an x86 machine: what tests/test_arm.py runs models in.

    python tests/arm/prepare_sysroot.py     # prints the sysroot's path on its last line

Run it with the Python that has onnx-sk's onnxruntime and numpy (the project's venv): the sysroot
gets the aarch64 wheels of the *same* versions, so x86 and ARM run the same ONNX Runtime. Steps:

1. ``apt-get install -y qemu-user mmdebstrap arch-test`` when ``qemu-aarch64`` or ``mmdebstrap``
   is missing (needs root and apt-get; otherwise exit code 3 and one line saying so);
2. ``mmdebstrap --variant=extract --arch=arm64 --include=python3.11-minimal,libpython3.11-stdlib,
   libstdc++6 bookworm SYSROOT MIRROR``: unpacks an arm64 Python without running anything, from the
   machine's own Debian mirror (read from /etc/apt/sources.list and sources.list.d/);
3. ``pip install --target SYSROOT/usr/local/lib/python3.11/dist-packages --platform
   manylinux_2_28_aarch64 --only-binary=:all: --python-version 3.11 --no-deps onnxruntime==V
   numpy==V`` (onnxruntime's other dependencies are not needed to run a session);
4. the trap: ``import onnxruntime`` segfaults under qemu when the emulated process reads the host's
   x86 ``/sys/devices/system/cpu/{possible,present}``; empty files of those names inside the
   sysroot (``qemu-aarch64 -L`` looks there first) make its CPU detection fail cleanly instead
   (it then prints "Error in cpuinfo: ..." warnings, harmless);
5. a smoke test (``import numpy, onnxruntime`` under emulation), then the finished folder is moved
   into place (an interrupted run leaves no half sysroot behind).

The cache: ``$ONNX_SK_ARM_CACHE`` or ``~/.cache/onnx-sk-arm``, one folder per onnxruntime/numpy
version pair. ``$ONNX_SK_ARM_MIRROR`` overrides the mirror. Exit codes: 0 ready, 3 qemu cannot
be installed here (0 with ``--optional``), 1 anything else failed (the failing command's output
is shown).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SUITE = "bookworm"  # Debian 12: python3.11, glibc 2.36 (the aarch64 wheels need glibc >= 2.28)
PYTHON = "python3.11"
PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
APT_PACKAGES = ("qemu-user", "mmdebstrap", "arch-test")
WHEELS = ("onnxruntime", "numpy")
PLATFORM = "manylinux_2_28_aarch64"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITES = {
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
    "oldstable",
    "stable",
    "testing",
    "unstable",
}
STAMP = ".onnx-sk-sysroot.json"
CANNOT_INSTALL = 3


class Failed(Exception):
    """A step failed; the message is printed as ``error: ...``."""


def cache_dir() -> Path:
    return Path(os.environ.get("ONNX_SK_ARM_CACHE") or Path.home() / ".cache" / "onnx-sk-arm")


def wheel_versions() -> dict[str, str]:
    """The versions of onnxruntime and numpy installed next to this Python (the x86 side)."""
    try:
        return {name: version(name) for name in WHEELS}
    except PackageNotFoundError as e:
        raise Failed(
            f"{e.name} is not installed in {sys.executable}: run this with the project's venv"
        ) from None


def sysroot_path() -> Path:
    v = wheel_versions()
    return cache_dir() / f"{SUITE}-py3.11-onnxruntime{v['onnxruntime']}-numpy{v['numpy']}"


def _debian_uri(uris: list[str], suites: list[str]) -> str | None:
    """The first http(s) URI of a source whose suites include a plain Debian release name."""
    if not any(s in DEBIAN_SUITES for s in suites):
        return None
    return next((u.rstrip("/") for u in uris if u.startswith(("http://", "https://"))), None)


def debian_mirror(etc_apt: Path = Path("/etc/apt")) -> str:
    """The machine's own Debian archive mirror (deb822 ``*.sources`` and one-line ``*.list``
    files); ``$ONNX_SK_ARM_MIRROR`` if set; deb.debian.org when the machine has none (Ubuntu)."""
    if os.environ.get("ONNX_SK_ARM_MIRROR"):
        return os.environ["ONNX_SK_ARM_MIRROR"]
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for f in [*sorted((etc_apt / "sources.list.d").glob("*.sources")), *files]:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        if f.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields: dict[str, list[str]] = {}
                for line in stanza.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and not line.startswith((" ", "#")):
                        fields[key.strip().lower()] = value.split()
                if "deb" not in fields.get("types", []) or fields.get("enabled") == ["no"]:
                    continue
                uri = _debian_uri(fields.get("uris", []), fields.get("suites", []))
                if uri:
                    return uri
        else:
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if not words or words[0] != "deb":
                    continue
                words = words[1:]
                if words and words[0].startswith("["):  # [arch=amd64 signed-by=...]
                    while words and not words[0].endswith("]"):
                        words = words[1:]
                    words = words[1:]
                uri = _debian_uri(words[:1], words[1:2])
                if uri:
                    return uri
    return DEFAULT_MIRROR


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``cmd``; on failure raise :class:`Failed` with its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise Failed(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")


class CannotInstall(Exception):
    """qemu is missing and this machine cannot install it (exit code 3)."""


def ensure_tools(tools: tuple[str, ...]) -> None:
    """``tools`` on PATH (qemu-aarch64, mmdebstrap), installed with apt-get when one is missing."""
    missing = [t for t in tools if not shutil.which(t)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise CannotInstall(
            f"{' and '.join(missing)} not installed and cannot be installed here (needs root and "
            f"apt-get): apt-get install {' '.join(APT_PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES]
    try:
        run(install, env=env)
    except Failed:  # stale or empty package lists (a fresh container): update, then retry
        run(["apt-get", "update", "-q"], env=env)
        run(install, env=env)


def build(target: Path, mirror: str, versions: dict[str, str]) -> None:
    """Steps 2-5 into ``target`` (which must not exist)."""
    mode = "root" if os.geteuid() == 0 else "unshare"
    run(
        [
            "mmdebstrap",
            f"--mode={mode}",
            "--variant=extract",
            "--arch=arm64",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(target),
            mirror,
        ]
    )
    site = target / "usr/local/lib/python3.11/dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(site),
            "--platform",
            PLATFORM,
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "--no-deps",
            *(f"{name}=={v}" for name, v in versions.items()),
        ]
    )
    cpu = target / "sys/devices/system/cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present"):
        (cpu / name).write_text("")
    run(
        [
            "qemu-aarch64",
            "-L",
            str(target),
            "-cpu",
            "cortex-a53",
            str(target / "usr/bin" / PYTHON),
            "-c",
            "import numpy, onnxruntime",
        ]
    )
    stamp = {"suite": SUITE, "mirror": mirror, "platform": PLATFORM, **versions}
    (target / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")


def prepare() -> Path:
    """The ready sysroot's path, preparing it first when it is not in the cache."""
    sysroot = sysroot_path()
    if (sysroot / STAMP).is_file():
        ensure_tools(("qemu-aarch64",))
        return sysroot
    ensure_tools(("qemu-aarch64", "mmdebstrap"))
    sysroot.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".partial-", dir=sysroot.parent))
    try:
        build(work / "sysroot", debian_mirror(), wheel_versions())
        if not (sysroot / STAMP).is_file():  # another run may have finished first
            if sysroot.exists():
                shutil.rmtree(sysroot)
            (work / "sysroot").rename(sysroot)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sysroot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print-mirror", action="store_true", help="print the mirror and exit")
    parser.add_argument(
        "--optional",
        action="store_true",
        help="exit 0, not 3, when qemu cannot be installed here (the ARM tests then skip, saying why)",
    )
    args = parser.parse_args(argv)
    try:
        if args.print_mirror:
            print(debian_mirror())
            return 0
        print(prepare())
    except CannotInstall as e:
        print(f"{'skipped' if args.optional else 'error'}: {e}", file=sys.stderr)
        return 0 if args.optional else CANNOT_INSTALL
    except Failed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
