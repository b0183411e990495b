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
    the anchors (the shared intermediate tensors) in the end-to-end loss. ``augment``: the
    fraction of each training batch perturbed by :func:`augment` (shift, contrast, noise),
    labelled by the teacher as they are drawn; 0: none (1, the default, was measured best at the
    full budget: CRNN string accuracy up to 0.94 against 0.83-0.90 without, detector F1 0.992
    against 0.967, MNIST 0.989 either way). ``carried_lr``: the fraction of the rate at which
    the weights the student holds from the teacher (same name, same values: the convs kept,
    recurrent layers, heads) train; the new weights train at the full rate. At 1 (the rate
    Adam moves every weight by, ~1e-2 a step) some CRNN recoveries stalled at 0.59-0.74 string
    accuracy, the trained LSTM and classifier pushed away from the teacher's; at 0.1 none did
    (README, "Recovery at the full budget")."""

    mix: float = 0.0
    augment: float = 1.0
    schedule: str = "cosine"
    temperature: float = 4.0
    stage1: float = 0.1
    aux: float = 0.0
    carried_lr: float = 0.1
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


#: :func:`augment`: the largest shift, as a fraction of each spatial dim; the contrast factor's
#: range (log-uniform); the noise's standard deviation, as a fraction of the sample's
SHIFT, CONTRAST, NOISE = 1 / 16, 1.25, 0.03


def spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    """The spatial axes of a batch ``x`` [N, ...]: NCHW-like (the axes after the channel),
    channels-last when the last dim is a channel count (<= 4) below the second's."""
    if x.ndim == 4 and x.shape[-1] <= 4 < x.shape[1]:
        return (1, 2)
    return tuple(range(2, x.ndim))


def augment(batch: dict[str, np.ndarray], fraction: float, rng: np.random.Generator) -> dict:
    """``batch`` with its first ``round(fraction · n)`` samples perturbed, each alike in every
    float input: shifted along each spatial axis by up to ``SHIFT`` of its size (edges
    repeated), its contrast about its mean scaled by a factor in [1/CONTRAST, CONTRAST], and
    Gaussian noise of ``NOISE`` times its standard deviation added. The teacher labels the
    perturbed samples, so the student matches it on a neighbourhood of the data, not only on
    the samples given (function matching; the inputs need no labels)."""
    n = len(next(iter(batch.values())))
    k = int(round(fraction * n))
    if k == 0:
        return batch
    shifts = rng.uniform(-1.0, 1.0, size=(k, 8))
    factors = np.exp(rng.uniform(-1.0, 1.0, size=k) * np.log(CONTRAST))
    seeds = rng.integers(0, 2**31, size=k)
    out = {}
    for name, x in batch.items():
        if not np.issubdtype(x.dtype, np.floating):
            out[name] = x
            continue
        y = np.array(x, copy=True)
        axes = spatial_axes(x)
        for i in range(k):
            s = y[i]
            for j, axis in enumerate(axes[:8]):
                size = x.shape[axis]
                step = int(round(shifts[i, j] * size * SHIFT))
                if step:
                    idx = np.clip(np.arange(size) - step, 0, size - 1)
                    s = np.take(s, idx, axis=axis - 1)
            mean, std = float(s.mean()), float(s.std())
            s = mean + factors[i] * (s - mean)
            noise = np.random.default_rng(seeds[i]).standard_normal(s.shape)
            y[i] = (s + NOISE * std * noise).astype(x.dtype)
        out[name] = y
    return out
