"""The distillation method's choices measured on the MNIST ResNet (issue 13): one ``distill`` run
of the teacher ``models/trained/mnist_resnet_ts.onnx`` into its ``optimize`` student (every
eligible conv replaced, first kept, ``--objective params``, ``--init he|approx``) on the first
``--samples`` training digits without labels, with the method's options given on the command line;
prints (and appends to ``--log``) one JSON row: test accuracy on the 1,000 held-out digits (ONNX
Runtime), top-1 agreement with the teacher, epochs per stage, held-out loss curve.

    PYTHONPATH=. python bench/distill_method_mnist.py --minutes 5 --temperature 4 --class-axis 1 \\
        --stage1 0.1 --aux 0 --lr 1e-2 --schedule cosine --tag M

The rows of the README's method table are in ``bench/results/distill_method_mnist.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_mnist_resnet import load_data  # noqa: E402

import onnx_sk  # noqa: E402
from onnx_sk.training.distill import distill  # noqa: E402
from onnx_sk.training.method import Method  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def logits(path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, default=ROOT / "models/trained/mnist_resnet_ts.onnx")
    ap.add_argument("--init", default="he")
    ap.add_argument("--objective", default="params")
    ap.add_argument("--minutes", type=float, default=5, help="0: no time limit")
    ap.add_argument("--epochs", type=int, default=10000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--mix", type=float, default=0.0)
    ap.add_argument("--schedule", default="constant")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--class-axis", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--stage1", type=float, default=1 / 3)
    ap.add_argument("--aux", type=float, default=0.1)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--tag", default="")
    ap.add_argument("--log", type=Path, default=None, help="append the row to this .jsonl")
    a = ap.parse_args()
    xtr, _, xte, yte = load_data()
    want = logits(a.teacher, xte)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        student, data, out = d / "student.onnx", d / "data.npz", d / "out.onnx"
        onnx_sk.optimize(a.teacher, student, init=a.init, objective=a.objective)
        np.savez(data, input=xtr[: a.samples])  # labels not used
        m = Method(
            mix=a.mix, schedule=a.schedule, temperature=a.temperature, stage1=a.stage1, aux=a.aux
        )
        r = distill(
            a.teacher, student, out, data, epochs=a.epochs,
            minutes=a.minutes if a.minutes > 0 else None, batch_size=a.batch_size, lr=a.lr,
            patience=a.patience, class_axis=a.class_axis, method=m,
        )  # fmt: skip
        got = logits(out, xte)
    row = dict(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        teacher_acc=float((want.argmax(1) == yte).mean()),
        acc=float((got.argmax(1) == yte).mean()),
        agree=float((got.argmax(1) == want.argmax(1)).mean()),
        epochs_run={
            s: sum(1 for x in r.curve if x["stage"] == s) for s in ("blocks", "end-to-end")
        },
        loss=[r.holdout_loss_before, r.holdout_loss_after],
        seconds=r.seconds,
        curve=[
            (x["stage"][0], x["epoch"], round(x["holdout_loss"], 4), x["seconds"]) for x in r.curve
        ],
        when=time.strftime("%Y-%m-%d %H:%M"),
    )
    print(json.dumps(row))
    if a.log is not None:
        with a.log.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
