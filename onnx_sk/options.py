"""Every option of ``onnx-sk optimize``, declared once.

Each option is a field of one of the frozen dataclasses below, with its default, its help text
and its command-line flag (``--`` + the field name with dashes, unless ``flag`` says otherwise).
From these declarations:

- the Typer command ``onnx-sk optimize`` is generated (:mod:`onnx_sk.cli.params`), one help panel
  per group;
- the Python API ``onnx_sk.optimize(model, output, **options)`` takes the same names
  (:meth:`OptimizeOptions.from_flat`; its signature is generated from the fields too);
- the report's ``options`` section is :meth:`OptimizeOptions.flat` (the same names again).

Validation lives with the module that owns the option: the planning objectives check the
reduce and latency groups (``passes/objectives.py``), the initialisation pass the fitting group
(``passes/init_weights.py``), the widen pass the widen group (``passes/widen.py``), the
recovery pass the recovery and data groups (``passes/recover.py``, the data options through
``training/images.py``, which ``distill`` shares), and the pipeline ``--mode`` and
``--input-shape`` (``pipeline.py``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from onnx_sk.errors import UserError
from onnx_sk.maths.designs import DEFAULT_BOTTLENECK_RATIO, DESIGNS
from onnx_sk.maths.weight_init import INITIALISERS

Choices = tuple[str, ...] | Callable[[], tuple[str, ...]]

#: seeds numpy's generators take: non-negative, and kept to 64 bits
MAX_SEED = 2**63 - 1


def option(
    default: Any, help: str, *, flag: str | None = None, choices: Choices | None = None
) -> Any:
    """A declared option: ``default``, one line of ``help``, its flag (``--name`` by default;
    a ``--no-…`` flag of a bool that defaults to True turns it off) and, for a closed set of
    values, its ``choices`` (a tuple, or a function returning the names of a registry): shown in
    the help and completed by the shell; the owner's ``validate`` still checks the value, with
    its one-line message."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The values an option takes, when it is a closed set (None for open ones)."""
    choices = f.metadata.get("choices")
    return choices() if callable(choices) else choices


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of an option field."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


@dataclass(frozen=True)
class ReduceOptions:
    """Which convs are replaced, and by which design (Mode 1, "reduce")."""

    PANEL = "Reduce (Mode 1)"

    design: str | None = option(
        None,
        f"Force a design: {', '.join(DESIGNS)}; none (--mode widen): widen only.",
        choices=lambda: (*DESIGNS, "none"),
    )
    objective: str | None = option(
        None,
        "Choose designs by params, macs or latency (measured). Default: params; with --recover, "
        "latency when every replaceable conv's input size is static (the model's, or "
        "--input-shape), else params.",
        choices=("params", "macs", "latency"),
    )
    include_first: bool = option(False, "Also replace the first conv.")
    min_channels: int = option(1, "Keep convs with fewer input or output channels.")
    exclude: tuple[str, ...] = option((), "Keep this conv (node or output name; repeatable).")
    bottleneck_ratio: float = option(
        DEFAULT_BOTTLENECK_RATIO, "Bottleneck K/F of the bottleneck designs."
    )


@dataclass(frozen=True)
class LatencyOptions:
    """Where and how ``--objective latency`` measures."""

    PANEL = "Latency objective"

    provider: str | None = option(None, "--objective latency: execution provider to measure on.")
    threads: int | None = option(None, "--objective latency: intra-op threads (default 1).")
    lut: str | None = option(None, "--objective latency: latency table (JSON) to read and extend.")
    lut_from_target: bool = option(
        False, "The --lut was measured on the target device: use it, measure nothing."
    )
    precision: str = option(
        "fp32",
        "fp32; int8: every conv in int8 QDQ form (ORT's QLinearConv), SK or dense as the "
        "objective chooses; auto (--objective latency): per conv the fastest measured of fp32 "
        "and int8. Activation ranges from --calibration (else seeded random inputs).",
        choices=("fp32", "int8", "auto"),
    )


@dataclass(frozen=True)
class FitOptions:
    """How the new stages' weights are initialised, and for what."""

    PANEL = "Weights and fitting"

    init: str | None = option(
        None,
        "Weights of the new stages: approx fits the original kernel (deploy, or fine-tune from "
        "it); he draws He-normal weights (retrain from scratch, as the papers do). Default: "
        "approx, and he in --mode widen --widen-init he (every widened conv is drawn fresh: no "
        "kernel to fit). The table's 'init error' is the fit's relative weight error vs the "
        "original kernel.",
        choices=lambda: tuple(INITIALISERS),
    )
    calibration: str | None = option(
        None,
        "--init approx: .npz of input samples (one array per input, the first axis the "
        "samples); fit each conv to its actual input activations. Streamed: the first 256 "
        "samples at most, in batches the model accepts (its fixed batch, else up to 32 samples "
        "and 64 MiB).",
    )
    max_error: float | None = option(
        None,
        "--init approx: replace only convs whose relative approximation error is <= TAU.",
    )
    for_training: bool = option(
        False, "Insert an identity BatchNormalization after each new stage."
    )


@dataclass(frozen=True)
class WidenOptions:
    """Mode 2, "widen": spend the saved parameters on width."""

    PANEL = "Widen (Mode 2)"

    budget: str = option(
        "conv",
        "--mode widen: match conv params (conv) or all params (all).",
        choices=("conv", "all"),
    )
    width_scale: float | None = option(None, "--mode widen: scale every free channel space by S.")
    param_budget: int | None = option(
        None, "--mode widen: target parameter count instead of the original's."
    )
    round_to: int = option(1, "--mode widen: widths are multiples of N (e.g. 8).")
    widen_init: str = option(
        "he",
        "--mode widen: he (groups re-chosen) or preserve (zero outgoing weights, same function).",
        choices=("he", "preserve"),
    )


@dataclass(frozen=True)
class RecoverOptions:
    """Recovery: after the rewrite, distill the result from the original on unlabelled inputs
    (``onnx-sk distill``'s training, its defaults; needs the torch extra)."""

    PANEL = "Recovery (distillation)"

    recover: str | None = option(
        None,
        "Then train the result to reproduce the original on these unlabelled inputs (.npz: one "
        "array per input, axis 0 = samples; or a folder of images, read as the Data panel "
        "says; at most 256 MiB of samples held in memory), as onnx-sk distill does; needs the "
        "torch extra. "
        "Only the weights change; OUT is written once, after training. Designs default to "
        "--objective latency where input sizes are static (the most weights that keep 90% of "
        "the fastest design's time saving).",
    )
    recover_epochs: int = option(20, "--recover: the most epochs of each stage.")
    recover_minutes: float | None = option(None, "--recover: stop training after M minutes.")
    recover_holdout: float = option(
        0.2, "--recover: fraction of the samples held out (early stop, fidelity)."
    )
    recover_class_axis: int | None = option(
        None,
        "--recover: the outputs are class scores along this axis: trained by KL divergence on "
        "them (a Softmax/LogSoftmax output is found without it); argmax agreement reported.",
    )
    recover_mix: float = option(
        0.0,
        "--recover: this fraction of each batch is mixtures of two samples (labelled by the "
        "original as drawn): more points to match when the samples are few (0.5 helped on "
        "MNIST with a 20-minute budget; it costs epochs).",
    )
    recover_augment: float = option(
        1.0,
        "--recover: this fraction of each batch is shifted, contrast-scaled and noised "
        "(labelled by the original as drawn): the student matches it around the samples, not "
        "only on them (0: the samples as given).",
    )
    recover_carried_lr: float = option(
        0.1,
        "--recover: the original's own weights (the convs kept, recurrent layers, heads) train "
        "at this fraction of the rate; onnx-sk's new weights at the full rate (0: frozen).",
    )
    recover_threads: int = option(1, "--recover: torch and ONNX Runtime threads for training.")


@dataclass(frozen=True)
class DataOptions:
    """How a folder of images becomes input samples (``--recover DIR``, ``distill --data DIR``).

    Each image: decoded with Pillow, converted to RGB (or L), resized to ``size`` (bilinear,
    aspect not kept), ``x · scale``, then ``(x − mean) / std`` per channel, in ``layout``."""

    PANEL = "Data: a folder of images"

    size: str | None = option(
        None,
        "Images: resize to HxW (e.g. 224x224). Default: the model input's static height and width.",
    )
    scale: str | None = option(
        None, "Images: multiply the pixel values (0-255) by this first, e.g. 1/255. Default 1/255."
    )
    mean: str | None = option(
        None,
        "Images: subtract this after --scale: one value or one per channel in the model's "
        "channel order (e.g. 0.485,0.456,0.406). Default 0.",
    )
    std: str | None = option(
        None, "Images: then divide by this: one value or one per channel. Default 1."
    )
    channel_order: str = option(
        "rgb", "Images: the channel order the model takes.", choices=("rgb", "bgr")
    )
    layout: str | None = option(
        None,
        "Images: nchw or nhwc. Default: from the model's input shape (nhwc when only its last "
        "dim is 1 or 3), else nchw.",
        choices=("nchw", "nhwc"),
    )
    grayscale: bool = option(
        False,
        "Images: convert to grayscale (repeated over the channels when the model takes 3). "
        "Default: when the model's input has 1 channel.",
    )
    preprocess: str | None = option(
        None,
        "Instead of the image options: MODULE:FUNCTION (or FILE.py:FUNCTION) called on each "
        "file of the folder, returning {input name: array} (one sample) or an array for a "
        "single-input model.",
    )


#: an option group (each declares its help panel as ``PANEL``)
OptionGroup = (
    ReduceOptions | LatencyOptions | FitOptions | WidenOptions | RecoverOptions | DataOptions
)

GROUPS: dict[str, type[OptionGroup]] = {
    "reduce": ReduceOptions,
    "latency": LatencyOptions,
    "fitting": FitOptions,
    "widen": WidenOptions,
    "recovery": RecoverOptions,
    "data": DataOptions,
}


@dataclass(frozen=True)
class OptimizeOptions:
    """All options of ``optimize``: the run's own, then one dataclass per group."""

    PANEL = "Run"

    mode: str = option(
        "reduce",
        "reduce: replace dense convs with SK designs; widen: then scale widths back to the budget.",
        choices=("reduce", "widen"),
    )
    seed: int = option(0, "Seed of the weight initialiser.")
    input_shape: tuple[str, ...] = option(
        (), "NAME:1x3x224x224 for MACs and verification (repeatable)."
    )
    inputs: str | None = option(
        None,
        ".npz of inputs (keys = input names) for the fidelity check against the original; "
        "default: the seeded random input.",
    )
    verify: bool = option(
        True, "Skip verification and the fidelity check (not advised).", flag="--no-verify"
    )
    overwrite: bool = option(False, "Allow OUTPUT to be the input file.")
    reduce: ReduceOptions = field(default_factory=ReduceOptions)
    latency: LatencyOptions = field(default_factory=LatencyOptions)
    fitting: FitOptions = field(default_factory=FitOptions)
    widen: WidenOptions = field(default_factory=WidenOptions)
    recovery: RecoverOptions = field(default_factory=RecoverOptions)
    data: DataOptions = field(default_factory=DataOptions)

    def __post_init__(self) -> None:
        """``--init`` not given: approx, except he where widen draws every widened conv fresh
        (``--mode widen --widen-init he`` with a design): there is no kernel to fit.
        ``--objective`` not given: params, except with ``--recover`` in Mode 1, where the plan
        pass decides once the input sizes are known (``passes/plan.py``)."""
        if self.fitting.init is None:
            fresh = (
                self.mode == "widen"
                and self.widen.widen_init == "he"
                and self.reduce.design != "none"
            )
            fitting = dataclasses.replace(self.fitting, init="he" if fresh else "approx")
            object.__setattr__(self, "fitting", fitting)
        if self.reduce.objective is None and not (self.recovery.recover and self.mode == "reduce"):
            reduce = dataclasses.replace(self.reduce, objective="params")
            object.__setattr__(self, "reduce", reduce)

    @classmethod
    def from_flat(cls, **values: Any) -> OptimizeOptions:
        """Options from flat names (``design=…, threads=…``), as the API and the CLI give them.

        ``None`` for a repeatable option means none; a path may be a ``Path``; an unknown name is
        a TypeError, as for any Python function.
        """
        by_group: dict[str | None, dict[str, Any]] = {g: {} for g in (None, *GROUPS)}
        known = {f.name: (group, f) for group, f in option_fields()}
        for name, value in values.items():
            if name not in known:
                raise TypeError(f"optimize() got an unexpected keyword argument {name!r}")
            group, f = known[name]
            if isinstance(f.default, tuple):
                value = tuple(value or ())
            elif isinstance(value, os.PathLike):  # a file option given as a Path
                value = os.fspath(value)
            by_group[group][name] = value
        # by field name: each group's value goes to the field of its type
        groups: dict[str, Any] = {g: GROUPS[g](**by_group[g]) for g in GROUPS}
        return cls(**by_group[None], **groups)

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name (tuples as lists): the report's ``options``."""
        out: dict[str, Any] = {}
        for group, f in option_fields():
            value = getattr(getattr(self, group) if group else self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif not isinstance(value, (str, int, float, bool, list, type(None))):
                value = f"<{type(value).__name__}>"  # e.g. recover= an iterable of input dicts
            out[f.name] = value
        return out


def check_seed(seed: int) -> None:
    """``--seed`` of every command: an integer from 0 to :data:`MAX_SEED`."""
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed}: expected an integer from 0 to 2**63 - 1")


def option_fields() -> Iterator[tuple[str | None, dataclasses.Field]]:
    """(group name or None, field) of every option, in declaration order: the run's own first."""
    for f in dataclasses.fields(OptimizeOptions):
        if f.name not in GROUPS:
            yield None, f
    for name, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            yield name, f


def panel_of(group: str | None) -> str:
    """The help panel of a group's options."""
    return (GROUPS[group] if group else OptimizeOptions).PANEL
