"""``onnx-sk distill``: train an SK model (student) to reproduce the original model (teacher)
on unlabelled inputs, label-free, and write the trained weights back into the student's graph.

The teacher runs in ONNX Runtime (:mod:`onnx_sk.runtime.probe`) and gives the targets: its graph
outputs and the tensors both graphs produce under the same name (each replaced conv's output,
:mod:`onnx_sk.training.blocks`). The student trains as an :class:`OnnxModule` in two stages
(:mod:`onnx_sk.training.fit`: block-wise, then end-to-end). The written model is the student's
graph with new initializer values (same nodes, same inputs and outputs), checked by the ONNX
checker (full check) and by ONNX Runtime: on the held-out samples the written file must give the
trained torch module's outputs (``max |a − b| ≤ RTOL · max |b| + ATOL``), else nothing is written.
Fidelity to the teacher is measured with ONNX Runtime on the held-out split, before and after:
per output, cosine, max and mean |student − teacher| (:mod:`onnx_sk.training.targets`).

``distill`` reads and writes files; ``recover`` (``optimize --recover``) trains an in-memory
student and returns the checked graph for the optimize pipeline to write; both run ``train``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_sk.errors import UserError, VerificationError
from onnx_sk.graph.checks import check as full_check
from onnx_sk.graph.index import ConstantIndex
from onnx_sk.graph.load import load_model
from onnx_sk.graph.output_path import check_output_path
from onnx_sk.graph.save import save_json, save_model
from onnx_sk.options import DataOptions
from onnx_sk.runtime.compare import difference
from onnx_sk.runtime.feeds import real_inputs
from onnx_sk.runtime.probe import Probe
from onnx_sk.runtime.verify import ATOL, RTOL
from onnx_sk.training.blocks import cut
from onnx_sk.training.bn_fold import fold_training_bns, training_bns
from onnx_sk.training.data import Data, load_samples
from onnx_sk.training.data import validate as validate_data
from onnx_sk.training.method import Method, augment, mix
from onnx_sk.training.samples import Samples
from onnx_sk.training.targets import (
    VARIANCE_SAMPLES,
    Fidelity,
    Targets,
    distributions,
    fidelity,
    run_batched,
)

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class DistillResult:
    output: Path | None
    samples: int
    train_samples: int
    holdout_samples: int
    anchors: list[str]
    blocks: int
    curve: list[dict]
    holdout_loss_before: float
    holdout_loss_after: float
    before: list[Fidelity]
    after: list[Fidelity]
    verification_max_abs_diff: float
    seconds: float
    options: dict = field(default_factory=dict)
    stage1_skipped: str | None = None
    blocks_rescaled: int = 0
    #: where torch could not run some nodes: the ops that limited training, the tensors fed from
    #: the teacher, the cut targets, the nodes left untrained (training.partial); else None
    partial: dict | None = None
    #: the --for-training BNs folded into their conv stages in the written model (bn_fold)
    training_bns_folded: int = 0

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["output"] = str(self.output) if self.output is not None else None
        return doc


def require_torch(what: str = "distill") -> ModuleType:  # torch is optional: a module value
    """torch, or the one-line error naming the install (``what`` names the command or flag)."""
    try:
        import torch
    except ImportError:
        raise UserError(f"{what} needs PyTorch: pip install 'onnx-sk[torch]'") from None
    return torch


def validate(
    epochs: int,
    minutes: float | None,
    batch_size: int = 32,
    holdout: float = 0.2,
    lr: float = 1e-2,
    threads: int = 1,
    patience: int = 10,
    prefix: str = "--",
    mix: float = 0.0,
    augment: float = 0.0,
    carried_lr: float = 0.1,
) -> None:
    """The training options, checked before any work; the messages name them as
    ``prefix`` + name (``--recover-`` for ``optimize --recover``)."""
    if patience < 1:
        raise UserError(f"--patience must be at least 1 (got {patience})")
    if epochs < 1:
        raise UserError(f"{prefix}epochs must be at least 1 (got {epochs})")
    if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
        raise UserError(f"{prefix}minutes must be a positive number (got {minutes})")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {batch_size})")
    if not (0 <= holdout < 1):
        raise UserError(f"{prefix}holdout must be in [0, 1) (got {holdout})")
    if not (lr > 0 and math.isfinite(lr)):
        raise UserError(f"--lr must be a positive number (got {lr})")
    if threads < 1:
        raise UserError(f"{prefix}threads must be at least 1 (got {threads})")
    if not 0 <= mix <= 1:
        raise UserError(f"{prefix}mix must be in [0, 1] (got {mix})")
    if not 0 <= augment <= 1:
        raise UserError(f"{prefix}augment must be in [0, 1] (got {augment})")
    if not 0 <= carried_lr <= 1:
        raise UserError(f"{prefix}carried-lr must be in [0, 1] (got {carried_lr})")


def _same_signature(teacher: onnx.ModelProto, student: onnx.ModelProto) -> None:
    def sig(m: onnx.ModelProto) -> tuple[list, list]:
        ins = [(i.name, i.type.tensor_type.elem_type) for i in real_inputs(m)]
        return ins, [o.name for o in m.graph.output]

    (ti, to), (si, so) = sig(teacher), sig(student)
    for name, elem in si:
        if elem != onnx.TensorProto.FLOAT:
            raise UserError(
                f"distill trains float32 models; input {name!r} is "
                f"{onnx.helper.tensor_dtype_to_np_dtype(elem)}"
            )
    if ti != si:
        raise UserError(
            f"the student's inputs {[n for n, _ in si]} differ from the teacher's {[n for n, _ in ti]}"
        )
    if to != so:
        raise UserError(f"the student's outputs {so} differ from the teacher's {to}")


def _split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    if holdout == 0:
        return order, order
    k = min(n - 1, max(1, round(holdout * n)))
    return order[k:], order[:k]


def _write_back(student: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The student's graph with the trained values of its float initializers and Constants."""
    model = onnx.ModelProto()
    model.CopyFrom(student)
    for t in model.graph.initializer:
        if t.name in values:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
            t.CopyFrom(numpy_helper.from_array(values[t.name].astype(dtype), t.name))
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] in values:
            for a in n.attribute:
                if a.name == "value":
                    dtype = onnx.helper.tensor_dtype_to_np_dtype(a.t.data_type)
                    a.t.CopyFrom(numpy_helper.from_array(values[n.output[0]].astype(dtype)))
    return model


def _writable(student: onnx.ModelProto) -> set[str]:
    names = {t.name for t in student.graph.initializer}
    for n in student.graph.node:
        if n.op_type == "Constant" and any(a.name == "value" for a in n.attribute):
            names.add(n.output[0])
    return names


def _carried(teacher: onnx.ModelProto, student: onnx.ModelProto, names: set[str]) -> set[str]:
    """The student's weights in ``names`` that the teacher holds under the same name with the
    same values (the weights onnx-sk did not write: kept convs, LSTMs, heads)."""
    theirs, ours = ConstantIndex(teacher.graph), ConstantIndex(student.graph)
    out = set()
    for n in names:
        if n in theirs and n in ours and theirs.dims(n) == ours.dims(n):
            a, b = theirs.get(n), ours.get(n)
            if a is not None and b is not None and np.array_equal(a, b):
                out.add(n)
    return out


def checked_in_runtime(
    model: onnx.ModelProto | Path, trained: Trained
) -> tuple[list[Fidelity], float]:
    """ONNX Runtime on ``model`` (the trained graph, or its staged file) must give the trained
    module's outputs on the held-out samples (``max |a − b| ≤ RTOL · max |b| + ATOL``), else a
    VerificationError; returns the fidelity to the teacher after and the largest |ORT − torch|."""
    t = trained
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    probe = Probe(proto, [], t.threads, "written model")
    got = run_batched(probe, t.samples, t.held, t.batch_size)
    same = got
    if t.split is not None:  # torch ran the trainable part, on the teacher's fixed tensors
        part = Probe(t.split.apply(proto), [], t.threads, "written model's trainable part")
        fixed = {k: t.held_want[k] for k in t.split.fixed}
        parts = []
        for b in range(0, len(t.held), t.batch_size):
            feeds = t.samples.take(t.held[b : b + t.batch_size])
            feeds.update({k: v[b : b + t.batch_size] for k, v in fixed.items()})
            parts.append(part.run({k: feeds[k] for k in t.split.inputs + t.split.fixed}))
        same = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    worst = 0.0
    for name, want in t.torch_out.items():
        d = difference(want, same[name])
        if same[name].shape != want.shape or not d.max_abs_diff <= RTOL * d.scale + ATOL:
            raise VerificationError(
                f"output {name!r} of the written model differs from the trained module by "
                f"{d.max_abs_diff:.3g} (output scale {d.scale:.3g}): nothing written"
            )
        worst = max(worst, d.max_abs_diff)
    outputs = t.outputs or list(t.torch_out)
    return fidelity(outputs, t.held_want, got, t.class_axis), worst


@dataclass
class Trained:
    """A trained student, not yet written: its graph with the trained weights, what the check of
    the written file needs, and what the result reports."""

    model: onnx.ModelProto
    torch_out: dict[str, np.ndarray]  # the trained module's outputs on the held-out samples
    samples: Samples
    held: np.ndarray
    held_want: dict[str, np.ndarray]  # the teacher's outputs (and anchors) on them
    batch_size: int
    threads: int
    class_axis: int | None
    start: float
    fields: dict  # DistillResult's fields known before the written file is checked
    outputs: list[str] = field(default_factory=list)  # the graph outputs (fidelity)
    split: Any = None  # partial.Split: torch trained only this part (fed the teacher's tensors)

    def result(self, output: Path | None, after: list[Fidelity], worst: float) -> DistillResult:
        seconds = round(time.monotonic() - self.start, 2)
        return DistillResult(
            output=output, after=after, verification_max_abs_diff=worst, seconds=seconds,
            **self.fields,
        )  # fmt: skip


def distill(
    teacher: str | os.PathLike | onnx.ModelProto,
    student: str | os.PathLike | onnx.ModelProto,
    output: str | os.PathLike,
    data: Data,
    *,
    epochs: int = 20,
    minutes: float | None = None,
    batch_size: int = 32,
    holdout: float = 0.2,
    lr: float = 1e-2,
    seed: int = 0,
    threads: int = 1,
    patience: int = 10,
    report: str | os.PathLike | None = None,
    progress: Callable[[dict], None] | None = None,
    class_axis: int | None = None,
    block_stage: bool = True,
    size: str | None = None,
    scale: str | float | None = None,
    mean: str | float | list[float] | None = None,
    std: str | float | list[float] | None = None,
    channel_order: str = "rgb",
    layout: str | None = None,
    grayscale: bool = False,
    preprocess: str | None = None,
    method: Method | None = None,
) -> DistillResult:
    """Distill ``student`` from ``teacher`` on the unlabelled ``data`` and write it to ``output``
    (see the module docstring; the stages are in :mod:`onnx_sk.training.fit`).
    ``class_axis``: also report, per output, how often the argmax along that axis is the
    teacher's (outputs with fewer axes: None). ``block_stage=False`` skips stage 1 (end-to-end only; for comparisons).
    ``data``: an ``.npz`` path, a folder of images (read as ``size`` … ``preprocess`` say, the
    options of :class:`onnx_sk.options.DataOptions`), an iterable of ``{input name: array}``
    dicts or a ``CalibrationDataReader`` (:mod:`onnx_sk.training.data`)."""
    start = time.monotonic()
    m = method or Method()
    validate(epochs, minutes, batch_size, holdout, lr, threads, patience,
             mix=m.mix, augment=m.augment, carried_lr=m.carried_lr)  # fmt: skip
    opts = DataOptions(
        size=size, scale=scale, mean=mean, std=std, channel_order=channel_order,  # type: ignore[arg-type]
        layout=layout, grayscale=grayscale, preprocess=preprocess,
    )  # fmt: skip
    validate_data(data, opts)
    require_torch()
    t_loaded, s_loaded = load_model(teacher), load_model(student)
    for what, src in (("teacher", t_loaded.path), ("student", s_loaded.path)):
        if src is not None and Path(output).resolve() == src.resolve():
            raise UserError(f"output path {output} is the {what} model: refusing to overwrite it")
    out = check_output_path(output, [t_loaded.path, s_loaded.path], False)
    if report is not None:
        check_output_path(report, [t_loaded.path, s_loaded.path, out], False)
    t_model, s_model = t_loaded.model, s_loaded.model
    _same_signature(t_model, s_model)
    samples = load_samples(data, s_model, holdout, opts=opts)
    trained = train(
        t_model, s_model, samples, epochs=epochs, minutes=minutes, batch_size=batch_size,
        holdout=holdout, lr=lr, seed=seed, threads=threads, patience=patience,
        progress=progress, class_axis=class_axis, block_stage=block_stage, start=start,
        method=method,
    )  # fmt: skip
    full_check(trained.model)  # the full checker, as optimize runs it
    if trained.split is None:  # (a partial recovery's check reads the unfolded node list)
        bns = training_bns(s_model)
        folded = fold_training_bns(trained.model, bns, samples, threads)
        trained.fields["training_bns_folded"] = folded
    check: dict = {}

    def verify(path: Path | None) -> None:  # before the rename: a failed report writes nothing
        after, worst = checked_in_runtime(trained.model if path is None else path, trained)
        check["result"] = trained.result(out, after, worst)
        if report is not None:
            save_json(check["result"].to_dict(), report)

    written = save_model(trained.model, out, before_rename=verify)
    result: DistillResult = check["result"]
    result.output = written
    return result


def recover(
    teacher: onnx.ModelProto,
    student: onnx.ModelProto,
    data: Samples | Data,
    *,
    epochs: int = 20,
    minutes: float | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    progress: Callable[[dict], None] | None = None,
    data_options: DataOptions | None = None,
    class_axis: int | None = None,
    method: Method | None = None,
    threads: int = 1,
) -> tuple[onnx.ModelProto, DistillResult]:
    """``optimize --recover``: distill ``student`` (the optimized model, in memory) from
    ``teacher`` (the original) and return the trained graph, checked as distill checks the file
    it writes (the full checker; ONNX Runtime gives the trained module's outputs), and the result
    (``output`` None: the caller writes it). ``data``: as distill's, or :func:`recovery_samples`
    checked beforehand."""
    start = time.monotonic()
    m = method or Method()
    validate(epochs, minutes, holdout=holdout, threads=threads, prefix="--recover-",
             mix=m.mix, augment=m.augment, carried_lr=m.carried_lr)  # fmt: skip
    require_torch("--recover")
    _same_signature(teacher, student)
    samples = (
        data
        if isinstance(data, Samples)
        else recovery_samples(data, student, holdout, data_options)
    )
    trained = train(
        teacher, student, samples, epochs=epochs, minutes=minutes, holdout=holdout, seed=seed,
        progress=progress, start=start, class_axis=class_axis, method=method, threads=threads,
    )  # fmt: skip
    full_check(trained.model)  # the full checker, as optimize runs it
    after, worst = checked_in_runtime(trained.model, trained)
    return trained.model, trained.result(None, after, worst)


def recovery_samples(
    data: Data, model: onnx.ModelProto, holdout: float, opts: DataOptions | None = None
) -> Samples:
    """The checked samples of ``optimize --recover DATA`` (errors name ``--recover``)."""
    return load_samples(data, model, holdout, "--recover", "--recover-holdout", opts)


def train(
    t_model: onnx.ModelProto,
    s_model: onnx.ModelProto,
    samples: Samples,
    *,
    epochs: int = 20,
    minutes: float | None = None,
    batch_size: int = 32,
    holdout: float = 0.2,
    lr: float = 1e-2,
    seed: int = 0,
    threads: int = 1,
    patience: int = 10,
    progress: Callable[[dict], None] | None = None,
    class_axis: int | None = None,
    block_stage: bool = True,
    start: float | None = None,
    method: Method | None = None,
) -> Trained:
    """The two stages on ``samples`` (checked), ``minutes`` counted from ``start``; returns the
    student's graph with the trained weights, not yet checked."""
    torch = require_torch()
    from onnx_sk.training import fit, partial

    start = time.monotonic() if start is None else start
    train, held = _split(len(samples), holdout, seed)
    fit.setup(seed, threads)
    rng = np.random.default_rng(seed)

    # where torch cannot run a node: train the part it can, fed the teacher's tensors there
    sp = partial.split(t_model, s_model, samples.take(train[:2]), threads)
    tg = Targets.build(
        t_model, s_model, samples, train, held, batch_size, threads,
        extra=sp.fixed + sp.cut if sp else [],
    )  # fmt: skip
    outputs, held_want, one, var_src = tg.outputs, tg.held, tg.one, tg.var_src
    t_model_part = sp.model if sp else s_model  # the graph torch trains
    if sp:
        made = sp.produced()
        kept, train_outputs = [a for a in tg.kept if a in made and a not in sp.cut], sp.outputs
    else:
        kept, train_outputs = tg.kept, outputs
    targets = train_outputs + kept
    fixed = sp.fixed if sp else []
    # the loss's per-channel variances: every training target when cached, else the first ones
    inv = fit.inverse_variance({k: (tg.cache or var_src)[k] for k in targets})

    method = method or Method()
    method = dataclasses.replace(
        method, distributions=distributions(t_model, held_want, outputs, class_axis)
    )
    mix_rng = np.random.default_rng([seed, 1])

    def batch(p: np.ndarray) -> tuple[dict, dict]:  # positions in the training split
        """A training batch and the teacher's targets for it (mixed or augmented: run now in
        ORT)."""
        if method.mix > 0 or method.augment > 0:
            x = mix(samples.take(train[p]), method.mix, mix_rng)
            x = augment(x, method.augment, mix_rng)
            y = tg.teacher.run(x)
        else:
            x, y = samples.take(train[p]), tg.train(samples, train[p])
        x.update({k: y[k] for k in fixed})  # the teacher's tensors where torch cannot run
        return (
            {k: torch.from_numpy(v) for k, v in x.items()},
            {k: torch.from_numpy(v) for k, v in y.items()},
        )

    writable = _writable(s_model)
    st = fit.Student(t_model_part, train_outputs, kept, method)
    fit.freeze_except(st.module, st.module.keys, writable)
    held_feeds = {k: torch.from_numpy(v) for k, v in samples.take(held).items()}
    held_feeds.update({k: torch.from_numpy(held_want[k]) for k in fixed})
    held_t = {k: torch.from_numpy(v) for k, v in held_want.items()}

    def holdout_loss() -> float:
        with torch.no_grad():
            return float(st.output_loss(st.run(held_feeds, one), held_t, inv))

    before_ort = run_batched(tg.student, samples, held, batch_size)
    before = fidelity(outputs, held_want, before_ort, class_axis)
    loss_before = holdout_loss()
    curve = fit.Curve()
    deadline = start + minutes * 60 if minutes is not None else math.inf
    stage1_deadline = (
        start + (deadline - start) * method.stage1 if minutes is not None else math.inf
    )

    skipped = None if block_stage else "block_stage=False"
    scaled = 0
    bl = None
    try:
        if block_stage:
            bl = fit.Blocks(cut(t_model_part, kept + train_outputs))
    except UserError as exc:  # a block torch cannot run alone: end-to-end only
        skipped = str(exc)

    def run(stage: fit.Stage, until: float) -> None:
        fit.run_stage(
            stage, len(train), batch_size, epochs, lr, until, rng, curve, start, progress,
            patience, method.schedule, method.carried_lr,
        )  # fmt: skip

    carried = _carried(t_model, s_model, writable)

    if bl is not None:
        for m in bl.modules:
            fit.freeze_except(m, m.keys, writable)
        cal = samples.take(train[:VARIANCE_SAMPLES])
        cal.update({k: var_src[k] for k in fixed})
        scaled = fit.train_blocks(
            bl,
            st,
            holdout_loss,
            {k: torch.from_numpy(v) for k, v in cal.items()},
            {k: torch.from_numpy(v) for k, v in var_src.items()},
            lambda p: bl.loss(*batch(p), inv, one),
            one,
            lambda stage: run(stage, stage1_deadline),
            carried,
        )

    def batch_loss(p: np.ndarray) -> Tensor:  # positions in the training split
        x, y = batch(p)
        return st.loss(st.run(x, one), y, inv)

    stage2 = fit.Stage(
        "end-to-end",
        [p for p in st.module.parameters() if p.requires_grad],
        batch_loss,
        holdout_loss,
        lambda: fit.module_state(st.module),
        st.module.load_state_dict,
        fit.ids_of(st.module, carried),
    )
    run(stage2, deadline)
    loss_after = holdout_loss()

    model = _write_back(s_model, {k: v for k, v in st.values().items() if k in writable})
    with torch.no_grad():
        torch_out = {k: v.numpy() for k, v in st.run(held_feeds, one).items() if k in train_outputs}
    fields = {
        "samples": len(samples),
        "train_samples": len(train),
        "holdout_samples": len(held) if holdout > 0 else 0,
        "anchors": kept,
        "blocks": len(bl.blocks) if bl is not None else 0,
        "curve": curve.rows,
        "holdout_loss_before": loss_before,
        "holdout_loss_after": loss_after,
        "before": before,
        "options": {
            "epochs": epochs,
            "minutes": minutes,
            "batch_size": batch_size,
            "holdout": holdout,
            "lr": lr,
            "seed": seed,
            "threads": threads,
            "patience": patience,
            "class_axis": class_axis,
            "method": dataclasses.asdict(method),
        },
        "stage1_skipped": skipped,
        "blocks_rescaled": scaled,
        "partial": sp.to_dict() if sp else None,
    }
    return Trained(
        model, torch_out, samples, held, held_want, batch_size, threads, class_axis, start,
        fields, outputs, sp,
    )  # fmt: skip
