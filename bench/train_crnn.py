"""Train the CRNN text recogniser of issue 13 and export it with both torch exporters.

Network (input [batch, 1, 32, 128] in [0, 1], output CTC scores [batch, 32, 37], class 0 the
blank): five dense 3x3 Conv+BN+ReLU (1-32, 32-64, 64-96, 96-96, 96-128) with max-pools down
to height 1 and 32 time steps, a bidirectional LSTM (hidden 96), a linear head. Trained with
CTC loss on lines streamed from ``crnn_data.lines`` (seed 0, a fresh batch each step), Adam and a
one-cycle schedule, torch on one thread; then the BNs are folded by the exporters (eval mode).

    python bench/train_crnn.py --out-dir models/trained

prints the string accuracy (exact match after greedy CTC decoding) of torch and of both ONNX
exports on the fixed test set (``crnn_data.test_set``: 500 lines, seed 1001) and writes
``crnn_ts.onnx`` (TorchScript exporter) and ``crnn_dynamo.onnx`` (dynamo exporter), batch dynamic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crnn_data as data  # noqa: E402


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class CRNN(nn.Module):
    def __init__(self, hidden: int = 96, classes: int = len(data.ALPHABET) + 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(1, 32),
            nn.MaxPool2d(2),  # 16 x 64
            *conv_bn(32, 64),
            nn.MaxPool2d(2),  # 8 x 32
            *conv_bn(64, 96),
            *conv_bn(96, 96),
            nn.MaxPool2d((2, 1)),  # 4 x 32
            *conv_bn(96, 128),
            nn.MaxPool2d((4, 1)),  # 1 x 32
        )
        self.rnn = nn.LSTM(128, hidden, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).squeeze(2)  # [batch, 128, T]
        y, _ = self.rnn(f.permute(2, 0, 1))  # [T, batch, 2 * hidden]
        return self.head(y).transpose(0, 1)  # [batch, T, classes]


def batch(rng: np.random.Generator, size: int):
    images, texts = data.lines(size, rng)
    targets = torch.tensor([k for t in texts for k in data.encode(t)], dtype=torch.long)
    lengths = torch.tensor([len(t) for t in texts], dtype=torch.long)
    return torch.from_numpy(images), targets, lengths


def accuracy(model: nn.Module, images: np.ndarray, texts: list[str]) -> float:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(c)) for c in np.array_split(images, 10)])
    return data.string_accuracy(data.greedy_decode(logits.numpy()), texts)


def onnx_accuracy(path: Path, images: np.ndarray, texts: list[str]) -> tuple[float, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = np.concatenate(
        [sess.run(None, {name: c})[0] for c in np.array_split(images, 10)]  # type: ignore[index]
    )
    return data.string_accuracy(data.greedy_decode(logits), texts), logits


def train(args: argparse.Namespace) -> CRNN:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = CRNN(args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, args.lr, total_steps=args.steps, pct_start=0.15
    )
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    val_x, val_y = data.lines(200, args.seed + 77)
    start, running = time.time(), 0.0
    for step in range(1, args.steps + 1):
        model.train()
        x, targets, lengths = batch(rng, args.batch_size)
        logp = model(x).log_softmax(-1).transpose(0, 1)  # [T, batch, classes]
        steps = torch.full((x.shape[0],), logp.shape[0], dtype=torch.long)
        loss = ctc(logp, targets, steps, lengths)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % args.log_every == 0 or step == args.steps:
            acc = accuracy(model, val_x, val_y)
            print(
                f"step {step}/{args.steps} loss {running:.3f} val string acc {acc:.3f} "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )
    model.eval()
    return model


def export(model: CRNN, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(data.lines(2, 12345)[0])
    ts, dyn = out_dir / "crnn_ts.onnx", out_dir / "crnn_dynamo.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(ts),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
    )
    torch.onnx.export(
        model,
        (x,),
        str(dyn),
        dynamo=True,
        external_data=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
    )
    return ts, dyn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/ocr"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=250)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = train(args)
    test_x, test_y = data.test_set()
    print(f"torch test string accuracy {accuracy(model, test_x, test_y):.4f}")
    with torch.no_grad():
        ref = model(torch.from_numpy(test_x[:64])).numpy()
    for path in export(model, args.out_dir):
        acc, logits = onnx_accuracy(path, test_x, test_y)
        ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node})
        diff = float(np.abs(logits[:64] - ref).max())
        print(
            f"{path.name}: test string accuracy {acc:.4f}, max |ORT - torch| {diff:.2e}, ops {ops}"
        )


if __name__ == "__main__":
    main()
