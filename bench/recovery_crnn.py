"""Recovery benchmark of the CRNN text recogniser (issue 13), through the shared driver.

Quality: string accuracy (exact match after greedy CTC decoding) on the fixed rendered test set
(``crnn_data.test_set``: 500 lines, seed 1001); agreement: the fraction of test lines whose decoded
string equals the original model's. Unlabelled data: lines freshly rendered by the training
generator with seed ``crnn_data.UNLABELLED_SEED`` + the driver's seed (never the test set).

    PYTHONPATH=. python bench/recovery_crnn.py --samples 1000 --minutes 5
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crnn_data as data  # noqa: E402
from recovery import Task, main  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEST_X, TEST_Y = data.test_set()


def unlabelled(n: int, seed: int) -> dict[str, np.ndarray]:
    return {"input": data.lines(n, data.UNLABELLED_SEED + seed)[0]}


def predict(path: Path) -> list[str]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    chunks = np.array_split(TEST_X, 10)
    logits = np.concatenate([np.asarray(sess.run(None, {name: c})[0]) for c in chunks])
    return data.greedy_decode(logits)


task = Task(
    name="crnn",
    teacher=REPO / "models" / "trained" / "crnn_ts.onnx",
    quality_name="string accuracy",
    unlabelled=unlabelled,
    predict=predict,
    score=data.string_accuracy,
    labels=TEST_Y,
)

if __name__ == "__main__":
    main(task)
