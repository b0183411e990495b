"""The choices of the distillation method (:class:`Method`) and the input mixing it may use
(numpy only: ``training.distill`` reads them without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Method:
    """The choices of the training method; the defaults are the best measured on the MNIST
    ResNet of ``bench/train_mnist_resnet.py`` (README, "Label-free distillation").

    ``mix``: the fraction of each training batch replaced by mixtures of two of its samples
    (``λ·a + (1 − λ)·b``, λ uniform in [0, 1], every input mixed alike), labelled by the teacher
    in ONNX Runtime as they are drawn; 0: the samples as given. ``schedule``: ``"cosine"`` (the
    learning rate decays to 0 over each stage's epochs or time, whichever ends first) or
    ``"constant"``. ``temperature``: KL divergence at this temperature on the outputs that are
    distributions (``distributions``: output name -> class axis); 0: the normalised squared error
    on every output. ``stage1``: the fraction of the time the block-wise stage may use. ``aux``: the weight of
    the anchors (the shared intermediate tensors) in the end-to-end loss."""

    mix: float = 0.0
    schedule: str = "cosine"
    temperature: float = 4.0
    stage1: float = 0.1
    aux: float = 0.0
    distributions: dict = field(default_factory=dict)


def mix(batch: dict[str, np.ndarray], fraction: float, rng: np.random.Generator) -> dict:
    """``batch`` with its first ``round(fraction · n)`` samples replaced by mixtures of two of
    its samples, ``λ·a + (1 − λ)·b`` (λ uniform in [0, 1], the same pairs and λ for every input)."""
    n = len(next(iter(batch.values())))
    k = int(round(fraction * n))
    if k == 0 or n < 2:
        return batch
    a, b = rng.integers(0, n, size=k), rng.integers(0, n, size=k)
    lam = rng.uniform(0.0, 1.0, size=k).astype(np.float32)
    out = {}
    for name, x in batch.items():
        lam_x = lam.reshape([-1] + [1] * (x.ndim - 1))
        mixed = lam_x * x[a] + (1 - lam_x) * x[b]
        out[name] = np.concatenate([mixed.astype(x.dtype), x[k:]])
    return out
