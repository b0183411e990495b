"""ARM, checked for real: ONNX Runtime's aarch64 build runs the reference models and onnx-sk's SK
models to the outputs of x86 ONNX Runtime, on three emulated Arm CPUs (issue 15).

How: ``tests/arm/prepare_sysroot.py`` prepares (once, cached) an arm64 Debian sysroot holding the
aarch64 wheels of the *same* onnxruntime and numpy versions as this Python's;
``tests/arm/run_models.py`` runs every model in one Python process per CPU under
``qemu-aarch64 -L SYSROOT -cpu CPU`` (CPU provider, ORT_ENABLE_ALL, one thread: as deployed). Here
the same models run in x86 ONNX Runtime with graph optimisations disabled (the reference every
rewrite is checked against), and each output is compared at a tolerance relative to its scale
``max |x86|``:

- float32: ``max |arm - x86| <= 1e-5 · scale`` (measured <= 1.2e-6: only the summation order of
  other kernels differs);
- float16: ``1e-2 · scale`` (about ten half-precision steps of the scale: neoverse-n1 has fp16
  arithmetic and ORT runs native fp16 convs there, accumulating in fp16, where x86, cortex-a53 and
  cortex-a72 cast to float32; measured <= 1.5e-3 on neoverse-n1, 0 on the others);
- int8 (an output written by DequantizeLinear): two steps of the output's quantisation scale (one
  rounding flip in the last layer moves it by one step; measured: identical).

The models: every reference model in models/ with its stored input; SK models made by
``onnx_sk.optimize`` with each of the four designs on a model with symbolic height and width
(``table1_w16``: the shuffles' Reshape targets stay ``Shape(x)``, computed at run time) and on a
static one (``resnet18_w8_ext``: ORT folds them into constants), and the shuffle written as a
``Gather`` (``--objective latency`` may choose it) on one conv; two SK models in float16
(converted by ORT's float16 converter: onnx-sk keeps float16 convs) and int8 (QDQ by ORT's
``quantize_static``). Emulated timing means nothing: latency is measured on the device
(``onnx-sk bench``, ``onnx-sk profile-lut``).

Marked ``arm``; skipped only where qemu cannot be installed (not root, or no apt-get): as root the
first run installs it and prepares the sysroot (.ci/run does that step before the tests).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import MODELS, ROOT, conv_model
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.transformers.float16 import convert_float_to_float16

import onnx_sk
from onnx_sk.graph.build import replace_conv
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.maths.weight_init import he_init
from onnx_sk.runtime.latency import candidates

ARM_DIR = ROOT / "tests" / "arm"
CPUS = ("cortex-a53", "cortex-a72", "neoverse-n1")
FP16_CPUS = {"neoverse-n1"}  # Armv8.2-A with FEAT_FP16; cortex-a53/a72 are Armv8.0-A
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-2}
INT8_STEPS = 2

# reference models: name -> path under models/ (inputs from models/ref/<name>.npz)
REFERENCE = {
    "resnet20_cifar": "resnet20_cifar.onnx",
    "resnet20_cifar_dynamo": "resnet20_cifar_dynamo.onnx",
    "table1_w16": "table1_w16.onnx",
    "table1_w16_bn": "table1_w16_bn.onnx",
    "resnet18_w8_ext": "resnet18_w8_ext/model.onnx",
    "tiny_cnn": "tiny_cnn.onnx",
    "const_weights": "const_weights.onnx",
    "keras_cnn_tf2onnx": "keras_cnn_tf2onnx.onnx",
    "fp16_cnn": "fp16_cnn.onnx",
    "loop_conv": "loop_conv.onnx",
    "qlinear_conv": "qlinear_conv.onnx",
    "qdq_conv": "qdq_conv.onnx",
    "conv_weight_input": "conv_weight_input.onnx",
}
DESIGNS = ("dw-pw", "gc-pwg", "pw-dw-pw", "pwg-dw-pwg")
SHUFFLED = ("gc-pwg", "pwg-dw-pwg")  # the designs with a channel shuffle
# the SK sources: shuffle form -> (model, input shape); symbolic H/W run at a non-square size
SOURCES = {
    "symbolic": ("table1_w16.onnx", (1, 3, 48, 40)),
    "static": ("resnet18_w8_ext/model.onnx", (1, 3, 64, 64)),
}
# float16 and int8 versions of two SK models, one per shuffle form
LOW_PRECISION = [("symbolic", "gc-pwg"), ("static", "pwg-dw-pwg")]
# the shuffle as Gather (what --objective latency may choose) on one 3x3 conv 32 -> 32
GATHER_SPEC = ConvSpec(32, 32, (3, 3), pads=(1, 1, 1, 1), has_bias=True)
GATHER_INPUT = (1, 32, 24, 20)


@dataclass(frozen=True)
class Case:
    """One model run on x86 and on ARM: its file and the feeds (an .npz)."""

    name: str
    model: Path
    inputs: Path


def _case_names() -> list[str]:
    names = [f"ref-{n}" for n in REFERENCE]
    names += [f"sk-{form}-{d}" for form in SOURCES for d in DESIGNS]
    names += [f"sk-{form}-{d}-{p}" for form, d in LOW_PRECISION for p in ("fp16", "int8")]
    names += [f"sk-gather-{d}" for d in SHUFFLED]
    return names


CASES = _case_names()


def _load_prepare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prepare_sysroot", ARM_DIR / "prepare_sysroot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_sysroot = _load_prepare()


def _input_names(path: Path) -> list[str]:
    graph = onnx.load(path, load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits]


def _save_feeds(case: Case, feeds: dict[str, np.ndarray]) -> Case:
    np.savez(case.inputs, **feeds)
    return case


def _reference_case(name: str, out: Path) -> Case:
    path = MODELS / REFERENCE[name]
    with np.load(MODELS / "ref" / f"{name}.npz") as z:
        ref = {k: z[k] for k in z.files}
    names = _input_names(path)
    feeds = {names[0]: ref["input"]} if len(names) == 1 else {n: ref[n] for n in names}
    return _save_feeds(Case(f"ref-{name}", path, out / f"ref-{name}.npz"), feeds)


class _Calibration(CalibrationDataReader):
    """A few seeded normal inputs for ORT's int8 calibration."""

    def __init__(self, name: str, shape: tuple[int, ...], rng: np.random.Generator) -> None:
        self.samples: Iterator[dict[str, np.ndarray]] = iter(
            [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(4)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.samples, None)


def _sk_cases(out: Path, rng: np.random.Generator) -> list[Case]:
    cases = []
    for form, (source, shape) in SOURCES.items():
        for design in DESIGNS:
            name = f"sk-{form}-{design}"
            path = out / f"{name}.onnx"
            _, report = onnx_sk.optimize(MODELS / source, path, design=design, init="approx")
            assert report.replaced > 0, f"{name}: no conv replaced"
            x = rng.standard_normal(shape).astype(np.float32)
            case = Case(name, path, out / f"{name}.npz")
            cases.append(_save_feeds(case, {_input_names(path)[0]: x}))
    for form, design in LOW_PRECISION:
        src = out / f"sk-{form}-{design}.onnx"
        x_name = _input_names(src)[0]
        shape = SOURCES[form][1]
        fp16 = out / f"sk-{form}-{design}-fp16.onnx"
        onnx.save(convert_float_to_float16(onnx.load(src), keep_io_types=False), fp16)
        x = rng.standard_normal(shape).astype(np.float16)
        cases.append(_save_feeds(Case(fp16.stem, fp16, out / f"{fp16.stem}.npz"), {x_name: x}))
        int8 = out / f"sk-{form}-{design}-int8.onnx"
        quantize_static(
            str(src),
            str(int8),
            _Calibration(x_name, shape, rng),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
        x = rng.standard_normal(shape).astype(np.float32)
        cases.append(_save_feeds(Case(int8.stem, int8, out / f"{int8.stem}.npz"), {x_name: x}))
    for design in SHUFFLED:
        cases.append(_gather_case(design, out, rng))
    return cases


def _gather_case(design: str, out: Path, rng: np.random.Generator) -> Case:
    """A one-conv SK model whose shuffle is a Gather (symbolic batch, height and width)."""
    real = next(
        c
        for c in candidates(GATHER_SPEC, 0.25)
        if c.design == design and c.shuffle_impl == "gather"
    )
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)  # [c_out, c_in, kh, kw]
    b = rng.standard_normal(32).astype(np.float32)
    model = conv_model(w, b, attrs={"pads": [1, 1, 1, 1]})
    replace_conv(model.graph, "y", real, he_init(real, w, b, rng), "gather")
    assert [n.op_type for n in model.graph.node].count("Gather") == real.shuffles > 0
    name = f"sk-gather-{design}"
    onnx.save(model, out / f"{name}.onnx")
    x = rng.standard_normal(GATHER_INPUT).astype(np.float32)
    return _save_feeds(Case(name, out / f"{name}.onnx", out / f"{name}.npz"), {"x": x})


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    out = tmp_path_factory.mktemp("arm_models")
    built = [_reference_case(n, out) for n in REFERENCE]
    built += _sk_cases(out, np.random.default_rng(15))
    assert [c.name for c in built] == CASES
    return {c.name: c for c in built}


@pytest.fixture(scope="module")
def sysroot() -> Path:
    proc = subprocess.run(
        [sys.executable, str(ARM_DIR / "prepare_sysroot.py")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode == prepare_sysroot.CANNOT_INSTALL:
        pytest.skip(proc.stderr.strip().removeprefix("error: "))
    if proc.returncode != 0:
        pytest.fail(f"preparing the arm64 sysroot failed:\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def arm(
    sysroot: Path, cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """CPU -> the folder of run_models.py's results there (one emulated process per CPU, the
    three side by side)."""
    work = tmp_path_factory.mktemp("arm_runs")
    manifest = work / "manifest.json"
    rows = [
        {"name": c.name, "model": str(c.model), "inputs": str(c.inputs)} for c in cases.values()
    ]
    manifest.write_text(json.dumps(rows, indent=1))
    python = sysroot / "usr/bin" / prepare_sysroot.PYTHON
    procs = {
        cpu: subprocess.Popen(
            ["qemu-aarch64", "-L", str(sysroot), "-cpu", cpu, str(python)]
            + [str(ARM_DIR / "run_models.py"), str(manifest), str(work / cpu)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cpu in CPUS
    }
    for cpu, proc in procs.items():
        _, err = proc.communicate(timeout=1200)
        # "Error in cpuinfo: ..." lines are expected: the sysroot hides the host's CPU list
        assert proc.returncode == 0, f"{cpu}: run_models.py exited {proc.returncode}:\n{err}"
    return {cpu: work / cpu for cpu in CPUS}


def _x86(case: Case) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(case.model), so, providers=["CPUExecutionProvider"])
    with np.load(case.inputs) as z:
        feeds = {k: z[k] for k in z.files}
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def _dequantize_step(model: onnx.ModelProto, output: str) -> float | None:
    """The quantisation step of a graph output written by DequantizeLinear (per-tensor scale)."""
    node = next((n for n in model.graph.node if output in n.output), None)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    scale = next(i for i in model.graph.initializer if i.name == node.input[1])
    return float(np.max(numpy_helper.to_array(scale)))


def _tolerance(model: onnx.ModelProto, output: str, ref: np.ndarray) -> tuple[float, str]:
    step = _dequantize_step(model, output)
    if step is not None:
        return INT8_STEPS * step, f"{INT8_STEPS} quantisation steps of {step:.3g}"
    scale = float(np.max(np.abs(ref.astype(np.float64))))
    rtol = RTOL[ref.dtype]
    return rtol * scale, f"{rtol:g} x scale {scale:.3g}"


def _optimized_ops(arm: dict[str, Path], cpu: str, name: str) -> list[onnx.NodeProto]:
    """The nodes of the graph ORT ran on ``cpu`` (after its optimisations)."""
    path = arm[cpu] / f"{name}.optimized.onnx"
    return list(onnx.load(path, load_external_data=False).graph.node)


@pytest.mark.arm
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("cpu", CPUS)
def test_arm_matches_x86(cpu: str, name: str, arm: dict[str, Path], cases: dict[str, Case]):
    err = arm[cpu] / f"{name}.err"
    assert not err.exists(), f"{name} failed on {cpu}:\n{err.read_text()}"
    case = cases[name]
    want = _x86(case)
    with np.load(arm[cpu] / f"{name}.npz") as z:
        got = {k: z[k] for k in z.files}
    assert sorted(got) == sorted(want)
    model = onnx.load(case.model, load_external_data=False)
    for output, ref in want.items():
        assert got[output].shape == ref.shape and got[output].dtype == ref.dtype, output
        assert np.all(np.isfinite(got[output])), output
        diff = float(np.max(np.abs(got[output].astype(np.float64) - ref)))
        tol, how = _tolerance(model, output, ref)
        assert diff <= tol, f"{name} on {cpu}: output {output}: max |arm - x86| {diff:.3g} > {how}"


@pytest.mark.arm
@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("design", SHUFFLED)
def test_both_shuffle_forms_ran(cpu: str, design: str, arm: dict[str, Path]):
    """What ORT ran on ARM: with symbolic H/W the shuffles reshape to ``Shape(x)`` computed at run
    time; in the static model ORT folded those targets into constants; the Gather form stays a
    Gather."""
    for form, dynamic in (("symbolic", True), ("static", False)):
        nodes = _optimized_ops(arm, cpu, f"sk-{form}-{design}")
        shapes = {n.output[0] for n in nodes if n.op_type == "Shape"}
        reshapes = [n for n in nodes if n.op_type == "Reshape"]
        assert reshapes and any(n.op_type == "Transpose" for n in nodes), form
        assert any(n.input[1] in shapes for n in reshapes) == dynamic, form
    gather = _optimized_ops(arm, cpu, f"sk-gather-{design}")
    assert any(n.op_type == "Gather" for n in gather) and not any(
        n.op_type == "Transpose" for n in gather
    )


@pytest.mark.arm
@pytest.mark.parametrize("cpu", CPUS)
def test_fp16_kernels_follow_the_cpu(cpu: str, arm: dict[str, Path]):
    """neoverse-n1 (fp16 arithmetic) runs the float16 convs natively; cortex-a53/a72 run them in
    float32 between Casts: the float16 comparisons above cover both kernel families."""
    for name in [c for c in CASES if c.endswith("fp16")] + ["ref-fp16_cnn"]:
        ops = [n.op_type for n in _optimized_ops(arm, cpu, name)]
        assert any("Conv" in op for op in ops), name
        assert ("Cast" not in ops) == (cpu in FP16_CPUS), f"{name} on {cpu}: {sorted(set(ops))}"


def test_mirror_is_read_from_the_machines_apt_sources(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("ONNX_SK_ARM_MIRROR", raising=False)
    mirror = prepare_sysroot.debian_mirror
    (tmp_path / "sources.list.d").mkdir()
    assert mirror(tmp_path) == prepare_sysroot.DEFAULT_MIRROR  # nothing configured
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] https://packages.cloud.google.com/apt cloud-sdk main\n"
        "deb [arch=amd64] http://one-line.example/debian/ bookworm main\n"
    )
    assert mirror(tmp_path) == "http://one-line.example/debian"
    (tmp_path / "sources.list.d" / "a.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n\n"
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert mirror(tmp_path) == "http://mirror.example/debian"
    monkeypatch.setenv("ONNX_SK_ARM_MIRROR", "http://override.example/debian")
    assert mirror(tmp_path) == "http://override.example/debian"


def test_no_root_no_qemu_is_a_reason_to_skip(monkeypatch, capsys):
    monkeypatch.setattr(prepare_sysroot.shutil, "which", lambda _: None)
    monkeypatch.setattr(prepare_sysroot.os, "geteuid", lambda: 1000)
    reason = (
        "not installed and cannot be installed here (needs root and apt-get): "
        "apt-get install qemu-user mmdebstrap arch-test"
    )
    assert prepare_sysroot.main([]) == prepare_sysroot.CANNOT_INSTALL
    err = capsys.readouterr().err
    assert err.startswith("error: qemu-aarch64") and reason in err and err.count("\n") == 1
    assert prepare_sysroot.main(["--optional"]) == 0  # as .ci/run calls it: the tests then skip
    err = capsys.readouterr().err
    assert err.startswith("skipped: qemu-aarch64") and reason in err and err.count("\n") == 1
