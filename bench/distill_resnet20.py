"""Distillation on models/resnet20_cifar.onnx (random weights: no trained model in the repo yet).

The teacher is the reference ResNet-20; the student its ``onnx-sk optimize`` output (He init, every
eligible conv replaced, first kept). Unlabelled inputs: low-frequency random images (8×8 normal
draws upsampled ×4 to 3×32×32), ``--samples`` for distillation and a separate 256 for the test.
Reported on the test set, with ONNX Runtime: cosine of the logits to the teacher's, max |diff|, and
top-1 agreement with the teacher, for the student before distillation, after end-to-end only, and
after block-wise + end-to-end, each with the same ``--minutes``.

    PYTHONPATH=. python bench/distill_resnet20.py --samples 256 --minutes 1.5
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import onnx_sk
from onnx_sk.runtime.compare import difference
from onnx_sk.runtime.session import session

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "models" / "resnet20_cifar.onnx"


def images(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)
    return np.repeat(np.repeat(x, 4, axis=2), 4, axis=3)


def scores(model: Path, test: np.ndarray, want: np.ndarray) -> dict:
    got = session(str(model)).run(None, {"input": test})[0]
    d = difference(want, got)
    agree = float(np.mean(got.argmax(1) == want.argmax(1)))
    return {"cosine": d.cosine, "max_abs_diff": d.max_abs_diff, "top1_agreement": agree}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--minutes", type=float, default=1.5)
    ap.add_argument("--epochs", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        student = d / "student.onnx"
        onnx_sk.optimize(TEACHER, student, init="he")
        np.savez(d / "data.npz", input=images(args.samples, 0))
        test = images(256, 1)
        want = session(str(TEACHER)).run(None, {"input": test})[0]
        rows = {"before": scores(student, test, want)}
        for name, blocks in (("end-to-end only", False), ("blocks + end-to-end", True)):
            r = onnx_sk.distill(
                TEACHER,
                student,
                d / "out.onnx",
                d / "data.npz",
                epochs=args.epochs,
                minutes=args.minutes,
                block_stage=blocks,
            )
            rows[name] = scores(d / "out.onnx", test, want) | {
                "epochs": len(r.curve),
                "seconds": r.seconds,
            }
    print(json.dumps({"samples": args.samples, "minutes": args.minutes, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
