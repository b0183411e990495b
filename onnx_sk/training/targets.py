"""The teacher's side of distillation: its targets on the training and held-out samples (ONNX
Runtime), and the fidelity of a student's outputs to them.

The targets are the teacher's graph outputs and the *anchors*: tensors both graphs produce under
the same name, at the same shape, in float32 (each replaced conv's output,
:func:`onnx_sk.training.blocks.anchors`). The held-out targets are kept in memory; the training
targets too when they fit in ``TARGET_CACHE_BYTES``, else they are recomputed per batch.
Fidelity per output: cosine, max and mean |student − teacher|, and with a class axis how often
the argmax along it is the teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.runtime.compare import difference
from onnx_sk.runtime.probe import Probe, batch_fixed_at_one
from onnx_sk.training.blocks import anchors
from onnx_sk.training.samples import Samples

#: training targets are computed once and kept when they fit in this many bytes, else per batch
TARGET_CACHE_BYTES = 512 * 2**20
#: samples of the training split used for the per-channel variances of the loss
VARIANCE_SAMPLES = 256


@dataclass(frozen=True)
class Fidelity:
    """One output against the teacher's, over the held-out split (ONNX Runtime)."""

    name: str
    cosine: float
    max_abs_diff: float
    mean_abs_diff: float
    #: the fraction of positions whose argmax along ``class_axis`` is the teacher's (when given)
    argmax_agreement: float | None = None


@dataclass
class Targets:
    """The teacher's side: the outputs, the anchors kept (same shape in both models, float32),
    the held-out targets, the training targets (cached when they fit in TARGET_CACHE_BYTES)."""

    outputs: list[str]
    kept: list[str]
    teacher: Probe
    student: Probe
    held: dict[str, np.ndarray]
    var_src: dict[str, np.ndarray]  # the targets of the first VARIANCE_SAMPLES training samples
    one: bool
    cache: dict[str, np.ndarray] | None
    pos: dict[int, int]

    @classmethod
    def build(
        cls,
        t_model: onnx.ModelProto,
        s_model: onnx.ModelProto,
        samples: Samples,
        train: np.ndarray,
        held: np.ndarray,
        batch_size: int,
        threads: int,
        extra: list[str] | None = None,
    ) -> Targets:
        """``extra``: more teacher tensors to compute with the targets (the fixed inputs and cut
        targets of a partial recovery, :mod:`onnx_sk.training.partial`)."""
        outputs = [o.name for o in s_model.graph.output]
        candidates = [a for a in anchors(t_model, s_model) if a not in outputs]
        t_probe = Probe(t_model, candidates, threads, "teacher")
        s_probe = Probe(s_model, candidates, threads, "student")
        first = samples.take(train[:1])
        t_first, s_first = t_probe.run(first), s_probe.run(first)
        for o in outputs:
            if t_first[o].shape != s_first[o].shape:
                raise UserError(
                    f"output {o!r}: the student gives shape {list(s_first[o].shape)}, "
                    f"the teacher {list(t_first[o].shape)}"
                )
        kept = [
            a
            for a in candidates
            if t_first[a].shape == s_first[a].shape and t_first[a].dtype == np.float32
        ]
        t_probe = Probe(t_model, kept + [x for x in extra or [] if x not in kept], threads,
                        "teacher")  # fmt: skip
        one = batch_fixed_at_one(s_model) or batch_fixed_at_one(t_model)
        held_want = run_batched(t_probe, samples, held, batch_size)
        per_sample = sum(v[:1].nbytes for v in held_want.values())
        cache = None
        if per_sample * len(train) <= TARGET_CACHE_BYTES:
            cache = run_batched(t_probe, samples, train, batch_size)
        first_n = train[:VARIANCE_SAMPLES]
        var_src = (
            {k: v[: len(first_n)] for k, v in cache.items()}
            if cache is not None
            else run_batched(t_probe, samples, first_n, batch_size)
        )
        pos = {int(i): j for j, i in enumerate(train)}
        return cls(outputs, kept, t_probe, s_probe, held_want, var_src, one, cache, pos)

    def train(self, samples: Samples, index: np.ndarray) -> dict[str, np.ndarray]:
        """The targets of training samples ``index`` (sample indices), in that order."""
        if self.cache is not None:
            rows = [self.pos[int(i)] for i in index]
            return {k: v[rows] for k, v in self.cache.items()}
        return self.teacher.run(samples.take(index))


def run_batched(probe: Probe, samples: Samples, index: np.ndarray, batch: int) -> dict:
    parts: list[dict] = []
    for b in range(0, len(index), batch):
        parts.append(probe.run(samples.take(index[b : b + batch])))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def fidelity(
    outputs: list[str], teacher: dict, student: dict, class_axis: int | None
) -> list[Fidelity]:
    out = []
    for name in outputs:
        t, s = teacher[name], student[name]
        d = difference(t, s)
        agree = None
        if class_axis is not None and -t.ndim <= class_axis < t.ndim:
            agree = float(np.mean(t.argmax(class_axis) == s.argmax(class_axis)))
        out.append(Fidelity(name, d.cosine, d.max_abs_diff, d.mean_abs_diff, agree))
    return out


def distributions(
    model: onnx.ModelProto, held: dict[str, np.ndarray], outputs: list[str], class_axis: int | None
) -> dict[str, tuple[int, str]]:
    """The outputs that are distributions, name -> (class axis, kind): those a Softmax or a
    LogSoftmax writes (along its axis; before opset 13 only when that axis is the last, the one
    case where the old flattening semantics is a softmax along one axis), kind
    ``"probabilities"`` or ``"log-probabilities"``; with ``class_axis`` every other output that
    has that axis, as ``"logits"``."""
    producer = {o: n for n in model.graph.node for o in n.output}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    out: dict[str, tuple[int, str]] = {}
    for name in outputs:
        rank = held[name].ndim
        node = producer.get(name)
        if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
            axis = axis + rank if axis < 0 else axis
            if 0 <= axis < rank and (opset >= 13 or axis == rank - 1):
                kind = "probabilities" if node.op_type == "Softmax" else "log-probabilities"
                out[name] = (axis, kind)
        elif class_axis is not None and -rank <= class_axis < rank:
            out[name] = (class_axis % rank, "logits")
    return out
