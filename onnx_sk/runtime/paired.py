"""Whole-model variants timed against each other on the target, interleaved and paired.

What the per-conv latency table cannot see (the Q/DQ, layout reorders and kernels a choice
causes in its neighbours) shows only in the whole network, so a choice that depends on its
context is settled by timing two versions of the model: ``WARMUP`` runs each, then rounds in
which both run once in a seeded random order, as many as fit in ``budget_s`` (between
``MIN_ROUNDS`` and ``MAX_ROUNDS``); the speedup of ``b`` over ``a`` is the median over rounds of
``t_a[r] / t_b[r]`` (pair by pair, so the machine's drift cancels).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnx_sk.runtime.session import warm_session

if TYPE_CHECKING:
    import onnxruntime

WARMUP = 3
MIN_ROUNDS, MAX_ROUNDS = 15, 400
BUDGET_S = 2.0

Feeds = dict[str, np.ndarray]


def one_sample(model: onnx.ModelProto, feeds: Feeds) -> Feeds:
    """``feeds`` cut to one sample along the inputs whose batch dim is not fixed (latency is
    per sample; a fixed batch stays as it is)."""
    fixed = {
        i.name: i.type.tensor_type.shape.dim[0].dim_value
        for i in model.graph.input
        if i.type.tensor_type.shape.dim
    }
    return {k: v if v.ndim == 0 or fixed.get(k, 0) > 0 else v[:1] for k, v in feeds.items()}


class PairedTimer:
    """Sessions of model variants on one provider and thread count, and their paired speedups."""

    def __init__(
        self, provider: str, threads: int, feeds: Feeds, budget_s: float = BUDGET_S, seed: int = 0
    ) -> None:
        self.provider, self.threads, self.feeds, self.budget_s = provider, threads, feeds, budget_s
        self.rng = np.random.default_rng(seed)

    def open(self, model: onnx.ModelProto, what: str) -> onnxruntime.InferenceSession:
        """A warmed-up session of ``model`` (ORT_ENABLE_ALL, as deployed)."""
        return warm_session(model, self.provider, self.threads, self.feeds, what, WARMUP)

    def speedup(self, a: onnxruntime.InferenceSession, b: onnxruntime.InferenceSession) -> float:
        """The paired median speedup of session ``b`` over session ``a`` (module docstring)."""
        sessions = [a, b]
        times: list[list[float]] = [[], []]
        start = time.perf_counter()
        self._round(sessions, times)
        per_round = time.perf_counter() - start
        rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, math.ceil(self.budget_s / max(per_round, 1e-9))))
        for _ in range(rounds - 1):
            self._round(sessions, times)
        return float(np.median(np.asarray(times[0]) / np.asarray(times[1])))

    def _round(
        self, sessions: list[onnxruntime.InferenceSession], times: list[list[float]]
    ) -> None:
        for i in self.rng.permutation(len(sessions)):
            start = time.perf_counter()
            sessions[i].run(None, self.feeds)
            times[i].append(time.perf_counter() - start)
