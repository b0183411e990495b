"""Models as real exporters write them (issue 12): constants reached through Identity chains or
held in Constant nodes, a symbolic batch, static shapes kept by the rewrite, widen on every weight
form, quantized models, and the messages that go with them.

The torch cases export a freshly initialised torchvision-layout ResNet (written here: fresh
BatchNorms fold to identical zero biases, which the TorchScript exporter deduplicates and feeds
through ``Identity`` nodes) with one conv applied twice (a weight shared by two Conv nodes), with
both torch exporters.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_clean_error, conv_model, run_cli
from onnx import TensorProto, helper, numpy_helper

import onnx_sk
from onnx_sk.graph.analyze import analyze
from onnx_sk.graph.constants import canonical_constants
from onnx_sk.graph.load import load_model
from onnx_sk.graph.shapes import symbolic_inputs
from onnx_sk.maths.designs import realisations
from onnx_sk.maths.select import beats_dense
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.runtime.feeds import random_inputs
from onnx_sk.runtime.session import session

#: the committed models made by real exporters, each with a weight form the issue names
COMMITTED = {
    "const_weights": MODELS / "const_weights.onnx",  # Paddle-style Constant nodes
    "tf2onnx": MODELS / "keras_cnn_tf2onnx.onnx",
    "resnet20_dynamo": MODELS / "resnet20_cifar_dynamo.onnx",
}


def _run(model: onnx.ModelProto | Path, seed: int = 0) -> list[np.ndarray]:
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(model)
    feeds = random_inputs(proto, np.random.default_rng(seed), None, 32)
    return session(proto).run(None, feeds)


def _unread(model: onnx.ModelProto) -> list[str]:
    """Initializers and Constant node outputs that nothing reads (dead weights)."""
    g = model.graph
    used = {t for n in g.node for t in n.input} | {o.name for o in g.output}
    dead = [i.name for i in g.initializer if i.name not in used]
    return dead + [
        n.output[0] for n in g.node if n.op_type == "Constant" and n.output[0] not in used
    ]


def _dense_convs(path: Path) -> int:
    return sum(1 for r in analyze(path)["convs"] if r.get("kind") == "dense" and not r["scope"])


# --- the torch exports --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_exports(tmp_path_factory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional  # noqa: N806

    class Block(nn.Module):  # torchvision's BasicBlock
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + idt)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(16)
            self.layer1 = nn.Sequential(Block(16, 16, 1), Block(16, 16, 1))
            self.layer2 = nn.Sequential(Block(16, 32, 2), Block(32, 32, 1))
            self.shared = nn.Conv2d(32, 32, 3, 1, 1)  # applied twice: one weight, two Convs
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.layer2(self.layer1(F.relu(self.bn(self.stem(x)))))
            x = F.relu(self.shared(F.relu(self.shared(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    class DenseLayer(nn.Module):  # torchvision's DenseNet layer: BN-ReLU-1×1, BN-ReLU-3×3, Concat
        def __init__(self, cin: int, growth: int) -> None:
            super().__init__()
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(4 * growth)
            self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

        def forward(self, x):
            y = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
            return torch.cat([x, y], 1)

    class DenseNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.bn = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
            self.block = nn.Sequential(DenseLayer(16, 8), DenseLayer(24, 8), DenseLayer(32, 8))
            self.bn_out, self.fc = nn.BatchNorm2d(40), nn.Linear(40, 10)

        def forward(self, x):
            x = F.relu(self.bn_out(self.block(F.relu(self.bn(self.stem(x))))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    net = Net().eval()  # fresh BN: running mean 0, var 1, affine 1/0
    x = torch.randn(1, 3, 32, 32)
    out = tmp_path_factory.mktemp("exports")
    paths = {
        "torchscript": out / "ts.onnx",
        "dynamo": out / "dynamo.onnx",
        "densenet": out / "densenet.onnx",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (x,), str(paths["torchscript"]), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
        program = torch.onnx.export(
            net, (x,), dynamo=True, opset_version=18, input_names=["input"],
            output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch", max=64)},),
            external_data=False, verbose=False,
        )  # fmt: skip
        program.save(str(paths["dynamo"]), external_data=False)
        torch.onnx.export(
            DenseNet().eval(), (x,), str(paths["densenet"]), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    return paths


@pytest.mark.torch
def test_the_torchscript_export_reaches_constants_through_identity(torch_exports):
    """The fixture exercises what the issue describes: Identity nodes on initializers, and a
    weight read by two convs once they are bypassed."""
    raw = onnx.load(torch_exports["torchscript"])
    inits = {i.name for i in raw.graph.initializer}
    assert any(n.op_type == "Identity" and n.input[0] in inits for n in raw.graph.node)
    canon = load_model(torch_exports["torchscript"])
    assert canon.canonical.bypassed and not canon.canonical.folded
    weights = [n.input[1] for n in canon.model.graph.node if n.op_type == "Conv"]
    assert len(weights) - len(set(weights)) >= 1  # the shared conv's weight, read twice


#: dense k×k convs of each export: ResNet 1 + 4 + 4 + the shared conv twice; DenseNet 1 + 3
DENSE_CONVS = {"torchscript": 11, "dynamo": 11, "densenet": 4}


@pytest.mark.torch
@pytest.mark.parametrize("exporter", sorted(DENSE_CONVS))
def test_torch_exports_every_dense_conv_replaced_and_verified(torch_exports, exporter):
    path = torch_exports[exporter]
    report = analyze(path)
    assert not [r["reason"] for r in report["convs"] if "not constant" in (r["reason"] or "")]
    model, rep = onnx_sk.optimize(path, include_first=True)
    assert rep.replaced == _dense_convs(path) == DENSE_CONVS[exporter]
    assert rep.verification is not None and rep.verification["max_rel_diff"] < 1e-3
    assert not _unread(model)
    # the dense-equivalent claim is the verification above; against the original file's outputs
    # (approximated kernels of random, far-from-separable weights) only the shapes must match
    assert [o.shape for o in _run(model)] == [o.shape for o in _run(path)]


@pytest.mark.torch
@pytest.mark.parametrize("exporter", sorted(DENSE_CONVS))
@pytest.mark.parametrize("init", ["he", "preserve"])
def test_torch_exports_widen(torch_exports, exporter, init):
    path = torch_exports[exporter]
    model, rep = onnx_sk.optimize(path, mode="widen", widen_init=init, include_first=True)
    assert rep.widen is not None and rep.widen["spaces_free"] > 0
    assert 0.9 < rep.widen["ratio"] < 1.1  # the budget, up to the discreteness of small widths
    assert rep.replaced == DENSE_CONVS[exporter]  # every dense conv, at its widened width
    assert rep.verification is not None and "max_abs_diff" in rep.verification
    assert rep.verification.get("preserved") is (True if init == "preserve" else None)
    assert not _unread(model)


# --- committed real exports: Constant weights (Paddle-style), tf2onnx, dynamo -----------------


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_exports_every_dense_conv_replaced_and_verified(name):
    path = COMMITTED[name]
    model, rep = onnx_sk.optimize(path, include_first=True)
    assert rep.replaced == _dense_convs(path) > 0
    assert rep.verification is not None and "max_abs_diff" in rep.verification
    assert not _unread(model)


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_exports_widen_he(name):
    path = COMMITTED[name]
    model, rep = onnx_sk.optimize(path, mode="widen", include_first=True)
    assert rep.widen is not None and rep.widen["spaces_free"] > 0
    assert rep.replaced == _dense_convs(path) and "max_abs_diff" in rep.verification
    assert not _unread(model)


def test_widen_on_constant_node_weights_uses_the_widened_weights():
    """Paddle-style weights (every weight a Constant node): the written model reads the widened
    weights (no Constant node or initializer left unread, parameters counted once), and with
    ``preserve`` it computes exactly what the reduced model computes, checked here in ORT."""
    path = COMMITTED["const_weights"]
    assert all(n.op_type == "Constant" for n in onnx.load(path).graph.node[:10])
    assert load_model(path).canonical.folded
    reduced, _ = onnx_sk.optimize(path, include_first=True, seed=3)
    widened, rep = onnx_sk.optimize(
        path, mode="widen", widen_init="preserve", include_first=True, seed=3
    )
    assert rep.widen["scale"] > 1
    assert not _unread(widened)
    assert not [n for n in widened.graph.node if n.op_type == "Constant"]
    stored = sum(int(np.prod(i.dims)) for i in widened.graph.initializer if i.data_type == 1)
    assert rep.totals["params_after"] == stored
    for a, b in zip(_run(widened, 5), _run(reduced, 5), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))
    # and the widened convs really are wider than the reduced ones
    widths = {i.name: tuple(i.dims) for i in widened.graph.initializer}
    before = {i.name: tuple(i.dims) for i in reduced.graph.initializer}
    assert any(widths.get(k, v) != v for k, v in before.items()) or len(widths) != len(before)


# --- item 1: the canonical constant form ----------------------------------------------------------


def _identity_model() -> onnx.ModelProto:
    """x → Conv(w via Identity → Identity, b from a Constant node) → y; w's Identity also a
    graph output (kept)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b_value")
    nodes = [
        helper.make_node("Identity", ["w"], ["w1"]),
        helper.make_node("Identity", ["w1"], ["w2"]),
        helper.make_node("Identity", ["w"], ["w_out"]),
        helper.make_node("Constant", [], ["b"], value=b),
        helper.make_node("Conv", ["x", "w2", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8]),
            helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [8, 4, 3, 3]),
        ],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_canonical_constants_bypasses_identity_chains_and_folds_constant_nodes():
    model = _identity_model()
    original = model.SerializeToString()
    loaded = load_model(model)
    assert model.SerializeToString() == original  # the caller's proto is never edited
    assert loaded.canonical
    g = loaded.model.graph
    conv = next(n for n in g.node if n.op_type == "Conv")
    assert list(conv.input) == ["x", "w", "b"]
    assert [n.op_type for n in g.node] == ["Identity", "Conv"]  # the graph output's Identity
    assert {i.name for i in g.initializer} == {"w", "b"}
    for a, b in zip(_run(loaded.model), _run(model), strict=True):
        np.testing.assert_array_equal(a, b)
    again = onnx.ModelProto()
    again.CopyFrom(loaded.model)
    assert not canonical_constants(again)  # idempotent
    row = analyze(model)["convs"][0]
    assert row["eligible"], row["reason"]


def test_identity_weights_are_replaced_and_verified():
    model, rep = onnx_sk.optimize(_identity_model(), include_first=True)
    assert rep.replaced == 1 and rep.verification is not None
    assert "w_out" in {o.name for o in model.graph.output}


# --- item 2: symbolic batch -----------------------------------------------------------------------


def test_only_a_symbolic_batch_gives_macs_per_sample():
    path = MODELS / "resnet20_cifar.onnx"  # batch symbolic, 3×32×32 static
    report = analyze(path)
    tot = report["totals"]
    assert tot["per_sample"] == ["input"] and not tot["needs_input_shape"]
    fixed = analyze(path, ["input:1x3x32x32"])["totals"]
    assert tot["conv_macs"] == fixed["conv_macs"] > 0 and fixed["per_sample"] == []
    assert tot["total_macs"] == fixed["total_macs"]
    four = analyze(path, ["input:4x3x32x32"])["totals"]
    assert four["conv_macs"] == 4 * tot["conv_macs"]
    proc = run_cli("analyze", path)
    assert proc.returncode == 0, proc.stderr
    assert "per sample (batch 1 for input)" in proc.stdout


def test_optimize_counts_macs_per_sample():
    _, rep = onnx_sk.optimize(MODELS / "resnet20_cifar.onnx")
    t = rep.totals
    assert t["per_sample"] == ["input"]
    assert t["conv_macs_before"] > t["conv_macs_after"] > 0


def test_a_symbolic_spatial_dim_names_the_input_and_gives_an_example():
    path = MODELS / "table1_w16.onnx"  # batch, height and width symbolic
    assert symbolic_inputs(onnx.load(path), {}) == ["input:1x3x224x224"]
    proc = run_cli("analyze", path)
    assert "MACs need static spatial dims: give --input-shape input:1x3x224x224" in proc.stdout


def test_latency_measures_at_batch_1_and_asks_only_for_spatial_dims(tmp_path):
    out = tmp_path / "o.onnx"
    _, rep = onnx_sk.optimize(MODELS / "tiny_cnn.onnx", objective="latency")
    assert not [r for r in rep.convs if "input size unknown" in (r["reason"] or "")]
    row = next(r for r in rep.convs if r["name"] == "/features/features.3/Conv")
    assert row["design"] or "faster than the dense conv" in row["reason"]  # measured
    proc = run_cli("optimize", MODELS / "table1_w16.onnx", out, "--objective", "latency")
    assert_clean_error(
        proc,
        "--objective latency measures each conv at the model's input size, and input 'input' "
        "has a symbolic non-batch dim: give --input-shape input:1x3x224x224",
    )
    assert not out.exists()


# --- item 3: static shapes kept --------------------------------------------------------------------


def _unknown_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors whose shape after ONNX shape inference (no data propagation, as converters run it)
    has an unknown non-batch dim."""
    g = onnx.shape_inference.infer_shapes(model).graph
    out = set()
    for vi in (*g.value_info, *g.output):
        t = vi.type.tensor_type
        if not t.HasField("shape") or any(not d.HasField("dim_value") for d in t.shape.dim[1:]):
            out.add(vi.name)
    return out


REFERENCE_MODELS = [*sorted(MODELS.glob("*.onnx")), MODELS / "resnet18_w8_ext" / "model.onnx"]


@pytest.mark.parametrize("path", REFERENCE_MODELS, ids=lambda p: p.parent.name + "/" + p.name)
@pytest.mark.parametrize("design", [None, "gc-pwg"])  # gc-pwg: a shuffle in every replacement
def test_static_shapes_are_kept(path, design):
    original = onnx.load(path)
    before = _unknown_tensors(original)
    result, _ = onnx_sk.optimize(path, include_first=True, design=design)
    after = _unknown_tensors(result)
    names = {t for n in original.graph.node for t in n.output}
    assert after & names <= before  # no tensor of the input loses a static dim
    if not symbolic_inputs(original, {}):  # C/H/W static: nothing new is unknown either
        assert len(after) <= len(before)

        def shape_ops(m: onnx.ModelProto) -> int:
            return sum(1 for n in m.graph.node if n.op_type == "Shape")

        assert shape_ops(result) == shape_ops(original)


def test_bench_knows_the_macs_of_an_sk_model(tmp_path):
    from onnx_sk.runtime.bench import BenchOptions, load_bench_model

    out = tmp_path / "sk.onnx"
    onnx_sk.optimize(MODELS / "resnet20_cifar.onnx", out, design="gc-pwg", include_first=True)
    dense = load_bench_model(MODELS / "resnet20_cifar.onnx", BenchOptions())
    sk = load_bench_model(out, BenchOptions())
    assert dense.macs is not None and sk.macs is not None and 0 < sk.macs < dense.macs


def test_a_symbolic_height_keeps_the_dynamic_shuffle():
    model, rep = onnx_sk.optimize(MODELS / "table1_w16.onnx", design="gc-pwg", include_first=True)
    assert rep.replaced > 0
    assert any(n.op_type == "Shape" for n in model.graph.node)  # nothing baked
    # and an --input-shape (given for counting) is never baked into the graph
    fixed, _ = onnx_sk.optimize(
        MODELS / "table1_w16.onnx", design="gc-pwg", include_first=True,
        input_shape=["input:1x3x64x64"],
    )  # fmt: skip
    feeds = {"input": np.random.default_rng(0).standard_normal((2, 3, 96, 80), np.float32)}
    session(fixed).run(None, feeds)  # another batch and size still run


# --- item 4: widen that fails, or replaces nothing ------------------------------------------------


def test_widen_with_no_conv_replaced_prints_its_verification(tmp_path):
    out = tmp_path / "o.onnx"
    proc = run_cli(
        "optimize", COMMITTED["const_weights"], out, "--mode", "widen",
        "--exclude", "/features/features.3/Conv",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "verified: full checker ok, output names, dtypes and shapes unchanged" in proc.stdout
    assert out.exists()


def test_a_report_path_that_is_a_folder_is_refused_before_anything_is_written(tmp_path):
    out, folder = tmp_path / "o.onnx", tmp_path / "report"
    folder.mkdir()
    proc = run_cli("optimize", MODELS / "tiny_cnn.onnx", out, "--report", folder)
    assert_clean_error(proc, f"--report {folder} is a directory")
    assert not out.exists()


def test_a_failing_widen_leaves_no_output(tmp_path):
    out = tmp_path / "o.onnx"
    proc = run_cli("optimize", MODELS / "qlinear_conv.onnx", out, "--mode", "widen")
    assert proc.returncode == 2 and "every channel space is frozen" in proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


# --- item 6: quantized models -----------------------------------------------------------------------


def _elements(model: onnx.ModelProto, types: set[int]) -> int:
    return sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type in types)


@pytest.mark.parametrize("name", ["qdq_conv.onnx", "qlinear_conv.onnx"])
def test_int8_weights_are_counted_as_parameters(name):
    from onnx_sk.runtime.bench import BenchOptions, load_bench_model

    path = MODELS / name
    model = onnx.load(path)
    int8 = _elements(model, {TensorProto.INT8, TensorProto.UINT8})
    floats = _elements(model, {TensorProto.FLOAT})
    assert int8 >= 216  # the 8×3×3×3 weight
    assert analyze(path)["totals"]["all_params"] == int8 + floats
    bench = load_bench_model(path, BenchOptions(input_shapes={"input": (1, 3, 16, 16)}))
    assert bench.params == int8 + floats


def test_optimize_says_quantized_convs_are_not_rewritten(tmp_path):
    out = tmp_path / "o.onnx"
    proc = run_cli("optimize", MODELS / "qlinear_conv.onnx", out)
    assert proc.returncode == 0, proc.stderr
    assert "1 quantized convs (QLinearConv/ConvInteger) are not rewritten" in proc.stdout
    _, rep = onnx_sk.optimize(MODELS / "qlinear_conv.onnx")
    assert rep.quantized_convs and "quantized convs" in rep.message


# --- item 8: messages -------------------------------------------------------------------------------


def test_max_error_quotes_the_best_admissible_design():
    w = np.random.default_rng(0).standard_normal((32, 16, 3, 3)).astype(np.float32)
    model = conv_model(w, attrs={"pads": [1, 1, 1, 1]})
    _, rep = onnx_sk.optimize(model, init="approx", max_error=1e-9, include_first=True)
    reason = rep.convs[0]["reason"]
    m = re.fullmatch(
        r"no design within --max-error 1e-09 \(best admissible: (.+), error ([0-9.e+-]+)\)", reason
    )
    assert m, reason
    spec = ConvSpec(c_in=16, c_out=32, kernel_shape=(3, 3), pads=(1, 1, 1, 1))
    labels = {}
    for design in ("dw-pw", "gc-pwg", "pw-dw-pw", "pwg-dw-pwg"):
        for r in realisations(design, spec, 0.25):
            groups = " ".join(f"{k}={v}" for k, v in r.groups)
            k = f" K={r.bottleneck}" if r.bottleneck else ""
            labels[f"{r.design}{' ' + groups if groups else ''}{k}"] = r
    real = labels[m.group(1)]
    assert beats_dense(real, "params") and real.params < spec.params
    assert float(m.group(2)) > 1e-9


def _sigmoid_model() -> onnx.ModelProto:
    """A conv then Sigmoid with a bias of -12: outputs near 1e-5, where ATOL decides."""
    w = np.random.default_rng(1).standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.1
    extra = [helper.make_node("Sigmoid", ["y"], ["p"])]
    model = conv_model(w, np.full(16, -12.0), attrs={"pads": [1, 1, 1, 1]}, extra_nodes=extra)
    model.graph.output[0].CopyFrom(
        helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 16, "H", "W"])
    )
    return model


def test_verification_says_when_the_absolute_tolerance_decided(tmp_path):
    # --init approx: the stages approximate the conv, so the output stays near 0 (He stages would
    # put it anywhere)
    _, rep = onnx_sk.optimize(_sigmoid_model(), include_first=True, init="approx")
    v = rep.verification
    assert v["tolerance"] == "absolute"
    assert v["tolerance_note"].startswith("the absolute tolerance 1e-05 decided: output 'p'")
    src = tmp_path / "m.onnx"
    onnx.save(_sigmoid_model(), src)
    proc = run_cli("optimize", src, tmp_path / "o.onnx", "--include-first", "--init", "approx")
    assert proc.returncode == 0, proc.stderr
    assert "the absolute tolerance 1e-05 decided: output 'p' has scale" in " ".join(
        proc.stdout.split()
    )
    _, normal = onnx_sk.optimize(MODELS / "tiny_cnn.onnx")
    assert normal.verification["tolerance"] == "relative"
    assert normal.verification["tolerance_note"] == ""
