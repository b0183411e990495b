"""export-torch: forward equals ONNX Runtime, the module trains, and it exports to ONNX again."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_clean_error, run_cli
from onnx import helper

import onnx_sk
from onnx_sk.errors import UserError, VerificationError
from onnx_sk.runtime.feeds import random_inputs
from onnx_sk.runtime.session import session

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from onnx_sk.training.export import to_torch  # noqa: E402
from onnx_sk.training.module import OnnxModule  # noqa: E402
from onnx_sk.training.registry import OPS  # noqa: E402
from onnx_sk.training.weights import weights_into  # noqa: E402

CASES = [
    ("resnet20_cifar.onnx", None),
    ("resnet20_cifar_dynamo.onnx", "pw-dw-pw"),
    ("table1_w16_bn.onnx", "gc-pwg"),
    ("keras_cnn_tf2onnx.onnx", "pwg-dw-pwg"),
    ("resnet18_w8_ext/model.onnx", "dw-pw"),
    ("const_weights.onnx", None),
]


def _model(name: str, design: str | None, for_training: bool = True) -> onnx.ModelProto:
    if design is None:
        return onnx.load(MODELS / name)
    model, _ = onnx_sk.optimize(
        MODELS / name, design=design, include_first=True, for_training=for_training
    )
    return model


def _forward(module, feeds: dict) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(v) for v in feeds.values()])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize(("name", "design"), CASES)
def test_forward_matches_onnx_runtime(name, design):
    model = _model(name, design)
    feeds = random_inputs(model, np.random.default_rng(0), None, 64)
    want = session(model).run(None, feeds)
    got = _forward(to_torch(model), feeds)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


def test_every_weight_is_a_parameter_and_bn_statistics_are_buffers():
    model = _model("table1_w16_bn.onnx", "pw-dw-pw")
    module = to_torch(model)
    floats = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(list(module.buffers())) == 2 * len(bns)
    assert len(list(module.parameters())) == len(floats) - 2 * len(bns)
    assert all(p.requires_grad for p in module.parameters())


def test_training_changes_weights_lowers_the_loss_and_reexports(tmp_path):
    model = _model("table1_w16_bn.onnx", "pwg-dw-pwg")
    module = to_torch(model).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 24, 24, generator=gen)
    labels = torch.randint(0, 10, (8,), generator=gen)
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(x), labels)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    sk = [k for k in before if "/sk/" in k or "_sk_" in k]
    assert sk and all(not torch.equal(before[k], dict(module.named_parameters())[k]) for k in sk)
    module.eval()
    out = tmp_path / "retrained.onnx"
    torch.onnx.export(
        module, (x[:2],), str(out), input_names=["input"], output_names=["logits"], dynamo=False
    )
    onnx.checker.check_model(str(out), full_check=True)
    (got,) = session(onnx.load(out)).run(None, {"input": x[:2].numpy()})
    with torch.no_grad():
        want = module(x[:2]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_export_torch_cli_writes_a_loadable_module(tmp_path):
    src = tmp_path / "sk.onnx"
    onnx_sk.optimize(MODELS / "resnet20_cifar.onnx", src, design="dw-pw", for_training=True)
    out = tmp_path / "sk.pt"
    proc = run_cli("export-torch", src, out)
    assert proc.returncode == 0, proc.stderr
    module = torch.load(out, weights_only=False)
    feeds = random_inputs(onnx.load(src), np.random.default_rng(1), None, 32)
    np.testing.assert_allclose(
        _forward(module, feeds)[0],
        session(onnx.load(src)).run(None, feeds)[0],
        rtol=1e-4,
        atol=1e-4,
    )


def _graph(nodes, opset=17, domains=()):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 4, 4])],
        [helper.make_tensor_value_info(nodes[-1].output[0], onnx.TensorProto.FLOAT, None)],
    )
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=opsets)


def test_unsupported_op_is_a_clear_error(tmp_path):
    model = _graph([helper.make_node("Det", ["x"], ["y"], name="det")])
    with pytest.raises(UserError, match="op 'Det' \\(node 'det'\\) is not supported"):
        to_torch(model)
    path = tmp_path / "det.onnx"
    onnx.save(model, path)
    proc = run_cli("export-torch", path, tmp_path / "det.pt")
    assert proc.returncode == 2 and proc.stderr.startswith(
        "error: export-torch: op 'Det' (node 'det')"
    )
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "det.pt").exists()
    assert_clean_error(
        run_cli("export-torch", path, tmp_path / "nope" / "x.pt"),
        f"output folder {tmp_path / 'nope'} does not exist",
    )


def test_every_refused_op_is_named_in_one_line(tmp_path):
    """Unknown op types (counted), a custom domain, a refused attribute and an unused output."""
    nodes = [
        helper.make_node("Det", ["x"], ["a"], name="det1"),
        helper.make_node("Det", ["x"], ["b"], name="det2"),
        helper.make_node("Mystery", ["x"], ["c"], name="custom", domain="com.acme"),
        helper.make_node("Resize", ["x", "", "s"], ["d"], name="aa", mode="linear", antialias=1),
        helper.make_node("MaxPool", ["x"], ["e", "idx"], name="mp", kernel_shape=[2, 2]),
        helper.make_node("Cast", ["idx"], ["f"], name="cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Sum", ["a", "b", "c", "d", "e", "f"], ["y"], name="sum"),
    ]
    model = _graph(nodes, opset=19, domains=["com.acme"])
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "s")
    )
    path = tmp_path / "many.onnx"
    onnx.save(model, path)
    proc = run_cli("export-torch", path, tmp_path / "many.pt")
    assert_clean_error(
        proc,
        "export-torch: ops 'Det' (node 'det1' and 1 more), 'com.acme.Mystery' (node 'custom'), "
        "'Resize' (antialias 1) (node 'aa'), 'MaxPool' (output 1) (node 'mp') are not supported; "
        f"supported: {', '.join(sorted(OPS))}",
    )
    assert not (tmp_path / "many.pt").exists()


def test_weights_are_parameters_scalars_buffers_and_attribute_inputs_host_values():
    w = np.ones((4, 4, 3, 3), np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "scale"], ["m"]),  # per-channel: a parameter
        helper.make_node("Add", ["m", "three"], ["a"]),  # a scalar: a buffer
        helper.make_node("Resize", ["a", "", "s"], ["r"], mode="nearest"),  # scales: host
        helper.make_node("Add", ["r", "grid"], ["y"]),
    ]
    model = _graph(nodes)
    consts = {
        "w": w,
        "b": np.zeros(4, np.float32),
        "scale": np.ones((4, 1, 1), np.float32),
        "three": np.array(3.0, np.float32),
        "s": np.array([1, 1, 2, 2], np.float32),
        "grid": np.zeros((1, 1, 8, 8), np.float32),
    }
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in consts.items())
    module = to_torch(model)
    params = {k.split("_", 1)[1] for k, _ in module.named_parameters()}
    buffers = {k.split("_", 1)[1] for k, _ in module.named_buffers()}
    assert params == {"w", "b", "scale", "grid"} and buffers == {"three"}
    assert set(module.host) == {"s"}


def test_a_float16_model_keeps_its_type():
    """Constants keep the model's float type, so an fp16 model runs on fp16 inputs; the
    tolerance is fp16's (machine epsilon 2⁻¹⁰ ≈ 1e-3), both sides rounding differently."""
    model = onnx.load(MODELS / "fp16_cnn.onnx")
    module = to_torch(model)
    assert {p.dtype for p in module.parameters()} == {torch.float16}
    feeds = random_inputs(model, np.random.default_rng(0), None, 32)
    (want,) = session(model).run(None, feeds)
    (got,) = _forward(module, feeds)
    assert got.dtype == want.dtype == np.float16
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * float(np.abs(want).max()))


def test_a_graph_reading_an_undefined_tensor_or_a_bare_constant_is_a_clear_error(tmp_path):
    model = _graph([helper.make_node("Relu", ["nowhere"], ["y"], name="r")])
    path = tmp_path / "undefined.onnx"
    onnx.save(model, path)
    # the CLI refuses it at load (an invalid model); the converter says the same on its own
    assert_clean_error(
        run_cli("export-torch", path, tmp_path / "u.pt"),
        f"{path} is not a valid ONNX model: node 'r' reads 'nowhere', which no node, "
        "initializer or graph input defines",
    )
    with pytest.raises(UserError) as err:
        OnnxModule(model)
    assert str(err.value) == (
        "export-torch: node 'r' (Relu) reads 'nowhere', which nothing before it defines "
        "(the graph is not in topological order?)"
    )
    bare = _graph(
        [
            helper.make_node("Constant", [], ["c"], name="c"),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ]
    )
    with pytest.raises(UserError, match="Constant 'c' has 0 attributes"):
        to_torch(bare)


def _train_a_little(module, shape, classes=None, steps=3):
    module.train()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        out = module(torch.randn(4, *shape[1:], generator=gen))  # a batch for BN statistics
        out = out[0] if isinstance(out, tuple) else out
        (out**2).mean().backward()
        opt.step()
    return module.eval()


@pytest.mark.parametrize(("name", "design"), [("const_weights.onnx", None), CASES[2]])
def test_trained_weights_go_back_into_the_onnx_model(name, design):
    """Initializers and Constant-node weights take the trained values; the written model runs in
    ONNX Runtime exactly like the module, and nothing but constants changed."""
    model = _model(name, design)
    feeds = random_inputs(model, np.random.default_rng(0), None, 24)
    module = _train_a_little(to_torch(model), next(iter(feeds.values())).shape)
    written = weights_into(model, module)
    onnx.checker.check_model(written, full_check=True)
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in model.graph.node]
    assert written.graph.input == model.graph.input and written.graph.output == model.graph.output
    want = _forward(module, feeds)
    got = session(written).run(None, feeds)
    before = session(model).run(None, feeds)
    for g, w, b in zip(got, want, before, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * float(np.abs(w).max()))
        assert np.abs(g - b).max() > 1e-3  # the training did change the model


def test_weights_into_another_model_is_a_clear_error():
    module = to_torch(_model("const_weights.onnx", None))
    with pytest.raises(UserError, match="the model has no constant named"):
        weights_into(_model("table1_w16_bn.onnx", None), module)
    other = _model("const_weights.onnx", None)
    const = next(n for n in other.graph.node if n.op_type == "Constant")
    const.attribute[0].t.dims[0] += 1  # the same names, one shape changed
    with pytest.raises(UserError, match=f"constant '{const.output[0]}': shape"):
        weights_into(other, module)


def test_export_torch_refuses_to_write_a_module_that_differs_from_onnx_runtime(
    tmp_path, monkeypatch
):
    """A wrong rule (Relu doubled) is caught by the check against ONNX Runtime: nothing written."""
    relu = OPS["Relu"]
    monkeypatch.setitem(OPS, "Relu", dataclasses.replace(relu, fn=lambda m, n, a, x: 2 * x.relu()))
    out = tmp_path / "wrong.pt"
    with pytest.raises(VerificationError, match="output 'y' of the torch module differs"):
        onnx_sk.export_torch(_graph([helper.make_node("Relu", ["x"], ["y"])]), out)
    assert not out.exists()
    monkeypatch.setitem(OPS, "Relu", relu)
    assert onnx_sk.export_torch(_graph([helper.make_node("Relu", ["x"], ["y"])]), out) == out


def test_nan_where_onnx_runtime_has_nan_is_not_a_difference(tmp_path):
    model = _graph([helper.make_node("Log", ["x"], ["y"])])  # random normal input: NaN for x < 0
    assert onnx_sk.export_torch(model, tmp_path / "log.pt").exists()
