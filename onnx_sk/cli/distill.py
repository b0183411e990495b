"""``onnx-sk distill TEACHER STUDENT OUT --data DATA``: label-free distillation of an SK model."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from onnx_sk.cli.output import console
from onnx_sk.cli.params import choice_help
from onnx_sk.cli.progress import StageBar, stage_bar
from onnx_sk.options import DataOptions, choices_of
from onnx_sk.training.distill import distill
from onnx_sk.training.method import Method
from onnx_sk.training.samples import SAMPLE_BUDGET_BYTES

_DATA_FIELDS = {f.name: f for f in dataclasses.fields(DataOptions)}


def _data_option(name: str) -> Any:  # typer.Option is typed Any (a parameter's default)
    """The typer Option of a DataOptions field: its declared default, help and choices."""
    f = _DATA_FIELDS[name]
    choices = choices_of(f)
    return typer.Option(
        f.default, help=f.metadata["help"], rich_help_panel=DataOptions.PANEL,
        **(choice_help(choices) if choices else {}),
    )  # fmt: skip


def partial_line(p: dict) -> str:
    """What a partial recovery trained, and which op limited it (training.partial)."""
    fed = (
        f"; the nodes after it trained on the teacher's {', '.join(p['fixed_inputs'])}"
        if p["fixed_inputs"]
        else ""
    )
    cut = (
        f"; those before it towards the teacher's {', '.join(p['cut_targets'])}"
        if p["cut_targets"]
        else ""
    )
    return (
        f"partial recovery: limited by {', '.join(p['limited_by'])} (no torch rule): "
        f"{p['untrained_nodes']} node(s) left as they were{fed}{cut}"
    )


class _Progress:
    """One line per epoch: stage, epoch, losses, elapsed and the stage's ETA (at most: a stage
    may stop early, or at --minutes); on a terminal also the bar of ``cli/progress.py``: the
    stage's share done (epochs, or the time of ``--minutes`` when that ends it sooner), its
    held-out loss and ETA."""

    def __init__(self, bar: StageBar | None = None, minutes: float | None = None) -> None:
        self.stage_start: dict[str, float] = {}
        self.last = 0.0
        self.bar, self.minutes = bar, minutes

    def __call__(self, row: dict) -> None:
        start = self.stage_start.setdefault(row["stage"], self.last)
        self.last = row["seconds"]
        per_epoch = (row["seconds"] - start) / row["epoch"]
        eta = per_epoch * (row["epochs"] - row["epoch"])
        if self.minutes is not None:
            eta = min(eta, max(self.minutes * 60 - row["seconds"], 0.0))
        console.print(
            f"{row['stage']:>10} epoch {row['epoch']}/{row['epochs']}: train loss "
            f"{row['train_loss']:.4g}, held-out loss {row['holdout_loss']:.4g} "
            f"({row['seconds']:.0f} s, stage ETA ≤ {eta:.0f} s)"
        )
        if self.bar is not None:
            done = row["seconds"] - start
            self.bar(
                done / (done + eta) if done + eta > 0 else 1.0,
                f"{row['stage']} epoch {row['epoch']}/{row['epochs']}, held-out loss "
                f"{row['holdout_loss']:.4g}, ETA ≤ {eta:.0f} s",
            )


def distill_cmd(
    teacher: str = typer.Argument(..., help="The original ONNX model (never modified)."),
    student: str = typer.Argument(..., help="Its onnx-sk output to train (never modified)."),
    output: str = typer.Argument(..., help="Where to write the trained student (atomically)."),
    data: str = typer.Option(
        ...,
        help=".npz of unlabelled inputs (one array per input, key = input name, axis 0 = "
        "samples; stored arrays memory-mapped), or a folder of images (see the image options) "
        f"or of files for --preprocess. At most {SAMPLE_BUDGET_BYTES // 2**20} MiB of copied "
        "or decoded samples held in memory: the rest is spilled to a temporary file or decoded "
        "again.",
    ),
    epochs: int = typer.Option(20, help="The most epochs of each stage (block-wise, end-to-end)."),
    minutes: float = typer.Option(None, help="Stop training after this many minutes."),
    batch_size: int = typer.Option(32, help="Samples per training step."),
    holdout: float = typer.Option(
        0.2, help="Fraction of the samples held out (early stop, fidelity)."
    ),
    lr: float = typer.Option(1e-2, help="Adam learning rate (peak of the cosine schedule)."),
    seed: int = typer.Option(0, help="Seed of the split, the batch order and torch."),
    threads: int = typer.Option(1, help="Threads of torch and ONNX Runtime."),
    patience: int = typer.Option(
        10,
        help="Stop a stage after this many epochs without a better held-out loss (once half "
        "of the stage's cosine schedule is done; with --minutes, stages run to the deadline).",
    ),
    class_axis: int = typer.Option(
        None,
        help="The outputs are class scores along this axis: train them by KL divergence and "
        "report how often the argmax along it is the teacher's.",
    ),
    mix: float = typer.Option(
        0.0,
        help="This fraction of each batch is mixtures of two samples (labelled by the teacher "
        "as drawn): more points to match when the samples are few; it costs epochs.",
    ),
    augment: float = typer.Option(
        1.0,
        help="This fraction of each batch is shifted, contrast-scaled and noised (labelled by "
        "the teacher as drawn): the student matches it around the samples, not only on them "
        "(0: the samples as given).",
    ),
    carried_lr: float = typer.Option(
        0.1,
        help="The teacher's own weights in the student (same name, same values: the convs "
        "kept, recurrent layers, heads) train at this fraction of --lr (0: frozen).",
    ),
    report: str = typer.Option(None, help="Write the JSON report to this file."),
    size: str = _data_option("size"),
    scale: str = _data_option("scale"),
    mean: str = _data_option("mean"),
    std: str = _data_option("std"),
    channel_order: str = _data_option("channel_order"),
    layout: str = _data_option("layout"),
    grayscale: bool = _data_option("grayscale"),
    preprocess: str = _data_option("preprocess"),
) -> None:
    """Train STUDENT to reproduce TEACHER on unlabelled inputs (needs the torch extra)."""
    with stage_bar() as bar:
        r = distill(
            teacher,
            student,
            output,
            data,
            epochs=epochs,
            minutes=minutes,
            batch_size=batch_size,
            holdout=holdout,
            lr=lr,
            seed=seed,
            threads=threads,
            patience=patience,
            report=report,
            progress=_Progress(bar, minutes),
            class_axis=class_axis,
            size=size,
            scale=scale,
            mean=mean,
            std=std,
            channel_order=channel_order,
            layout=layout,
            grayscale=grayscale,
            preprocess=preprocess,
            method=Method(mix=mix, augment=augment, carried_lr=carried_lr),
        )
    for b, a in zip(r.before, r.after, strict=True):
        console.print(
            f"{a.name}: cosine to the teacher {b.cosine:.4f} → {a.cosine:.4f}, "
            f"max |diff| {b.max_abs_diff:.3g} → {a.max_abs_diff:.3g}"
            + (
                ""
                if a.argmax_agreement is None or b.argmax_agreement is None
                else f", argmax agreement {b.argmax_agreement:.3f} → {a.argmax_agreement:.3f}"
            )
            + " "
            f"({r.holdout_samples or r.train_samples} held-out samples)"
        )
    if r.partial:
        console.print(partial_line(r.partial))
    console.print(
        f"wrote {r.output} (held-out loss {r.holdout_loss_before:.4g} → {r.holdout_loss_after:.4g}, "
        f"{r.seconds:.0f} s)"
    )
