"""export-torch on models like the real ones: a CRNN text recogniser (convs, BN, a bidirectional
LSTM, a linear head, log-softmax) and a detector (strided convs, HardSwish, nearest and bilinear
Resize, ConvTranspose, Concat, Split and slicing in the head), each exported by both torch
exporters with dynamic batch / width / height. OnnxModule must match ONNX Runtime at several input
shapes, and ``onnx-sk optimize`` then ``onnx-sk export-torch`` must round-trip."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import run_cli

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from torch_ops_cases import compare  # noqa: E402

from onnx_sk.runtime.session import session  # noqa: E402
from onnx_sk.training.module import OnnxModule  # noqa: E402
from onnx_sk.training.weights import weights_into  # noqa: E402

nn = torch.nn
F = torch.nn.functional


class CRNN(nn.Module):
    def __init__(self, classes: int = 11) -> None:
        super().__init__()

        def block(c_in, c_out, pool):
            conv = nn.Conv2d(c_in, c_out, 3, padding=1)
            return [conv, nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(pool)]

        self.features = nn.Sequential(*block(1, 8, 2), *block(8, 16, 2), *block(16, 16, (2, 1)))
        self.rnn = nn.LSTM(16 * 2, 12, bidirectional=True)
        self.head = nn.Linear(24, classes)

    def forward(self, x):  # x [N, 1, 16, W]
        f = self.features(x)  # [N, 16, 2, W / 4]
        seq = f.permute(3, 0, 1, 2).flatten(2)  # [W / 4, N, 32]
        y, _ = self.rnn(seq)
        return F.log_softmax(self.head(y), -1)


class Detector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.lateral = nn.Conv2d(16, 8, 1)
        self.fuse = nn.Conv2d(16, 16, 3, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.head = nn.Conv2d(8, 7, 1)

    def forward(self, x):
        c1 = F.hardswish(self.stem(x))
        c2 = F.hardswish(self.down(c1))
        top = F.interpolate(self.lateral(c2), scale_factor=2.0, mode="nearest")
        p = F.relu(self.fuse(torch.cat([c1, top], 1)))
        out = self.head(F.relu(self.up(p)))
        box, obj, cls = torch.split(out, [4, 1, 2], dim=1)
        xy, wh = box[:, :2], box[:, 2:4]
        heat = F.interpolate(torch.sigmoid(obj), size=x.shape[2:], mode="bilinear")
        return torch.cat([torch.sigmoid(xy), torch.exp(wh.clamp(max=4)), cls.softmax(1)], 1), heat


MODELS = {
    "crnn": (CRNN, (2, 1, 16, 40), [(1, 1, 16, 24), (3, 1, 16, 64)], {0: "n", 3: "w"}),
    "detector": (
        Detector,
        (2, 3, 32, 48),
        [(1, 3, 64, 32), (2, 3, 16, 80)],
        {0: "n", 2: "h", 3: "w"},
    ),
}


def _export(name: str, dynamo: bool, path) -> onnx.ModelProto:
    make, shape, _, dims = MODELS[name]
    torch.manual_seed(0)
    module = make().eval()
    with torch.no_grad():  # BN statistics that are not the identity
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(*shape)
    outputs = ["y"] if name == "crnn" else ["y", "heat"]
    if dynamo:
        names = {k: torch.export.Dim(v, min=1 if k == 0 else 8, max=512) for k, v in dims.items()}
        torch.onnx.export(
            module,
            (x,),
            str(path),
            input_names=["x"],
            output_names=outputs,
            dynamo=True,
            external_data=False,
            dynamic_shapes=({**names},),
        )
    else:
        torch.onnx.export(
            module,
            (x,),
            str(path),
            input_names=["x"],
            output_names=outputs,
            dynamo=False,
            opset_version=17,
            dynamic_axes={"x": dims, **{o: {0: "n"} for o in outputs}},
        )
    return onnx.load(path)


CASES = [(name, dynamo) for name in MODELS for dynamo in (False, True)]
IDS = [f"{name}-{'dynamo' if dynamo else 'torchscript'}" for name, dynamo in CASES]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each model exported once per exporter (exports take seconds): path by (name, dynamo)."""
    folder = tmp_path_factory.mktemp("exported")
    cache: dict = {}

    def get(name: str, dynamo: bool):
        if (name, dynamo) not in cache:
            path = folder / f"{name}_{'dynamo' if dynamo else 'ts'}.onnx"
            _export(name, dynamo, path)
            cache[name, dynamo] = path
        return cache[name, dynamo]

    return get


@pytest.mark.parametrize(("name", "dynamo"), CASES, ids=IDS)
def test_exported_model_matches_onnx_runtime_at_every_shape(name, dynamo, exported):
    model = onnx.load(exported(name, dynamo))
    ops = {n.op_type for n in model.graph.node}
    want = (
        {"LSTM", "Shape", "Concat", "Reshape"}
        if name == "crnn"
        else {"Resize", "Concat", "ConvTranspose", "Split", "Slice", "HardSwish"}
    )
    assert want <= ops
    rng = np.random.default_rng(0)
    _, shape, more, _ = MODELS[name]
    for s in [shape, *more]:
        compare(model, {"x": rng.standard_normal(s).astype(np.float32)}, tol=1e-4)


def test_the_crnn_trains_through_its_lstm(exported):
    model = onnx.load(exported("crnn", False))
    module = OnnxModule(model).train()
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    params = dict(module.named_parameters())
    rnn_keys = [module.keys[i] for i in lstm.input[1:4]]
    assert all(k in params for k in rnn_keys)  # W, R, B
    x = torch.randn(4, 1, 16, 32, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 11, (8, 4), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.nll_loss(module(x).reshape(-1, 11), target.reshape(-1))
        loss.backward()
        assert all(params[k].grad is not None and params[k].grad.abs().sum() > 0 for k in rnn_keys)
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize(("name", "dynamo"), CASES, ids=IDS)
def test_optimize_then_export_torch_round_trips(name, dynamo, exported, tmp_path):
    src = exported(name, dynamo)
    sk = tmp_path / f"{name}_sk.onnx"
    proc = run_cli("optimize", src, sk, "--for-training", "-q")
    assert proc.returncode == 0, proc.stderr
    sk_model = onnx.load(sk)
    assert any(n.domain == "" and "sk" in n.name.lower() for n in sk_model.graph.node)
    pt = tmp_path / f"{name}_sk.pt"
    proc = run_cli("export-torch", sk, pt)
    assert proc.returncode == 0, proc.stderr
    module = torch.load(pt, weights_only=False)
    rng = np.random.default_rng(1)
    _, shape, more, _ = MODELS[name]
    for s in [shape, more[-1]]:
        x = rng.standard_normal(s).astype(np.float32)
        compare(sk_model, {"x": x}, tol=1e-4)  # OnnxModule built afresh from the SK model
        with torch.no_grad():
            got = module(torch.from_numpy(x))
        got = got if isinstance(got, tuple) else (got,)
        want = session(sk_model).run(None, {"x": x})
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


@pytest.mark.parametrize(("name", "dynamo"), CASES, ids=IDS)
def test_the_module_exports_to_onnx_again(name, dynamo, exported, tmp_path):
    """torch.onnx.export traces the module (shapes fixed at the traced one); the LSTM comes back
    as one LSTM node."""
    module = OnnxModule(onnx.load(exported(name, dynamo))).eval()
    _, shape, _, _ = MODELS[name]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    out = tmp_path / "again.onnx"
    torch.onnx.export(module, (x,), str(out), input_names=["x"], dynamo=False, opset_version=17)
    again = onnx.load(out)
    onnx.checker.check_model(again, full_check=True)
    if name == "crnn":
        assert [n.op_type for n in again.graph.node].count("LSTM") == 1
    with torch.no_grad():
        want = module(x)
    want = want if isinstance(want, tuple) else (want,)
    got = session(again).run(None, {"x": x.numpy()})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)


def test_trained_crnn_weights_go_back_into_its_dynamic_onnx_model(exported):
    """Unlike a traced re-export, the written model keeps the exporter's dynamic batch and width."""
    model = onnx.load(exported("crnn", True))
    module = OnnxModule(model).train()
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    x = torch.randn(4, 1, 16, 32, generator=torch.Generator().manual_seed(3))
    for _ in range(3):
        opt.zero_grad()
        module(x)[..., 0].mean().backward()  # raise class 0
        opt.step()
    module.eval()
    written = weights_into(model, module)
    rng = np.random.default_rng(4)
    for shape in [(1, 1, 16, 24), (3, 1, 16, 72)]:
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        compare(written, feeds, tol=1e-4)  # a fresh module of the written model = ORT
        with torch.no_grad():
            want = module(torch.from_numpy(feeds["x"])).numpy()
        (got,) = session(written).run(None, feeds)
        (before,) = session(model).run(None, feeds)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        assert np.abs(got - before).max() > 1e-3
