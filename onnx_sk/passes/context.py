"""What the passes of one run share: the options, the source, the report, and what each pass
leaves for the next (the plan, the fit targets, the replacements, the dense twin's outputs).

Each field below names the pass that writes it; a pass reads only fields of passes before it in
its pipeline (``onnx_sk/pipeline.py`` lists the pipelines).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from onnx_sk.graph.build import Replacement
from onnx_sk.graph.convs import ConvSite
from onnx_sk.graph.load import LoadedModel
from onnx_sk.graph.save import OutputFile
from onnx_sk.maths.approx import Target
from onnx_sk.maths.designs import Realisation
from onnx_sk.maths.fits import FitCache
from onnx_sk.options import OptimizeOptions
from onnx_sk.report import ModelCounts, Report
from onnx_sk.runtime.progress import Progress
from onnx_sk.runtime.verify import Outputs
from onnx_sk.training.samples import Samples


@dataclass(frozen=True)
class Alternative:
    """Another plan for one conv (``--precision auto``: its fastest int8 option, for a network
    in int8): its realisation (None: dense), precision, the reason it stays dense, the note."""

    real: Realisation | None
    int8: bool
    reason: str | None
    note: str


@dataclass
class Decision:
    """The plan for one conv: its realisation, or None and the reason it is kept."""

    site: ConvSite
    real: Realisation | None
    reason: str | None = None
    note: str | None = None
    #: --precision: the conv (dense or its SK stages) is written in int8 QDQ form
    int8: bool = False
    #: --precision auto: the conv's plan for a network in int8 (passes.plan_trial times both)
    alt: Alternative | None = None

    def take_alternative(self) -> None:
        """Make ``alt`` the decision (the plan trial found its network faster)."""
        if self.alt is not None:
            a = self.alt
            self.real, self.int8, self.reason, self.note = a.real, a.int8, a.reason, a.note


@dataclass
class PassContext:
    """The state of one optimize run, passed to every pass."""

    options: OptimizeOptions
    #: ``--input-shape``, parsed (name → dims; "" names the only input)
    input_shapes: dict[str, tuple[int, ...]]
    #: where the model came from; the dense-twin pass drops ``source.model`` while ONNX Runtime
    #: reads the file
    source: LoadedModel
    report: Report
    #: counted on the model before any pass ran (the totals' "before")
    before: ModelCounts
    #: the caller's unchanged model when the source is a ``ModelProto`` (the fidelity pass's
    #: reference; from a path, the file is)
    original: onnx.ModelProto | None = None
    #: the atomic output, when the run writes one (the verify pass checks the staged file)
    output: OutputFile | None = None
    #: the progress callback (``fraction, what``); the runner names the current pass ``stage``
    progress: Progress | None = None
    stage: str = ""
    #: the runner: the passes that completed, and whether any changed the model
    passes_run: list[str] = field(default_factory=list)
    modified: bool = False
    #: plan: every conv of the planned model, and the decision for each
    sites: list[ConvSite] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    #: plan: the inputs counted at batch 1 (only their batch was symbolic: MACs are per sample)
    per_sample: list[str] = field(default_factory=list)
    #: plan: conv output name → the conv's (input, output) spatial dims where the model itself
    #: declares them static (an ``--input-shape`` never counts)
    static_spatial: dict[str, tuple[tuple[int, ...] | None, tuple[int, ...] | None]] = field(
        default_factory=dict
    )
    #: plan (--precision int8/auto): conv output name → conv name of every conv to write in
    #: int8; with --max-error also its original (spec, kernel, bias, input tensor name): the
    #: reference of its int8 error
    int8: dict[str, str] = field(default_factory=dict)
    int8_dense: dict[str, tuple[Any, Any, Any, str]] = field(default_factory=dict)
    #: plan (--precision auto): the trial of the alternative plan (passes.plan_trial), for the
    #: report's ``precision.plan``; None when there was none
    plan_trial: dict[str, Any] | None = None
    #: plan (--precision auto): conv output name → conv name of every conv that could be int8
    int8_eligible: dict[str, str] = field(default_factory=dict)
    #: fit-targets: conv output name → what its weights are fitted to (BN scale, patches)
    targets: dict[str, Target] = field(default_factory=dict)
    #: error-budget: the chosen realisations' fits (stage weights and errors), which
    #: init-weights reuses instead of fitting again (``maths.fits``)
    fits: FitCache = field(default_factory=FitCache)
    #: init-weights: every conv to replace, with its stage weights (reduce fills ``new_nodes``)
    replacements: list[Replacement] = field(default_factory=list)
    #: verify: the staged output file it checked (None when checked in memory), and the
    #: optimized model's outputs on the dense twin's feeds
    staged: Path | None = None
    checked: Outputs | None = None
    #: dense-twin: the reference outputs every replaced conv must reproduce
    twin: Outputs | None = None
    #: widen: the outputs of the model before widening on seeded random input (run before the
    #: model is widened in place; the reference of the widened model's outputs)
    reference: Outputs | None = None
    #: ``reference`` when it is the original model's outputs (the widen pass ran before any
    #: other pass changed the model): the fidelity pass then need not run the original again
    original_outputs: Outputs | None = None
    #: widen (he): the plan's convs are widened and keep their old kernels until the reduce pass
    #: replaces them, so init-weights draws their stage weights with no kernel to fit
    fresh_weights: bool = False
    #: dense-twin: the fingerprint of the graph outside the replaced convs
    #: (graph.checks.structure), computed on demand
    twin_structure: Callable[[], Counter[str]] | None = None
    #: widen: the solution (scale, target, spaces, widths per conv)
    widen: dict[str, Any] | None = None
    #: the pipeline, once the model is loaded: the ``--recover`` samples, checked (recover reads)
    recover_samples: Samples | None = None

    def step(self, fraction: float, detail: str = "") -> None:
        """Report progress within the current pass (``stage: detail``) to the callback, if any."""
        if self.progress is not None:
            self.progress(fraction, f"{self.stage}: {detail}" if detail else self.stage)

    def forget_plan(self) -> None:
        """Drop what refers into the model (sites, decisions, targets, fits), so that it can be
        freed."""
        self.sites, self.decisions, self.targets = [], [], {}
        self.fits = FitCache()
