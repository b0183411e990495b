"""The report of ``optimize``, one for every mode: conv by conv, the totals, verification, widen.

``Report.to_dict()`` is the JSON report (``--report FILE``). Its sections:

- ``convs``: one row per conv of the model that was planned (``conv_row``): the design and
  its group numbers, or the reason it was kept; parameters and MACs before and after; the
  initialiser's relative error (``init_error``, ``init_output_error``);
- ``totals``: parameters of the whole model, of its convs, and conv MACs, before, after and their
  ratio. Mode 1 sums the rows (MACs at the static input shape; unknown when a dim is symbolic);
  Mode 2 counts the main graph's Conv nodes of the model before and after (no MACs);
- ``verification``: the structure verified (checker, information fields, outputs against the
  dense twin: the model with the designs' dense-equivalent kernels);
- ``fidelity``: the outputs against the *original* model's, per output (cosine, max and mean
  absolute difference) on the seeded input or ``--inputs``; ``next_step`` says what to do next;
- ``widen`` (Mode 2 only): the scale factor, the budget and how closely it was met, the widths;
- ``recovery`` (``--recover`` only): distill's result (samples, held-out loss and fidelity on
  the held-out split before and after, the loss curve, seconds) and ``fidelity_before`` (the
  ``fidelity`` section before recovery; ``fidelity`` is then the recovered model's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx

from onnx_sk.graph.build import Replacement
from onnx_sk.graph.convs import ConvSite
from onnx_sk.graph.counts import all_params, conv_params
from onnx_sk.maths.designs import Realisation

#: the widen budget is met when the achieved count is within this fraction of the target
BUDGET_TOLERANCE = 0.01


@dataclass
class Report:
    """What optimize did, conv by conv, and the totals (``to_dict`` is the JSON report)."""

    model: str | None
    output: str | None
    options: dict[str, Any]
    convs: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    message: str = ""
    widen: dict[str, Any] | None = None  # --mode widen: s, budget, achieved ratio, widths
    #: QLinearConv / ConvInteger nodes of the main graph (never rewritten), by name
    quantized_convs: list[str] = field(default_factory=list)
    #: the outputs against the original model's (not the dense twin's): cosine, max/mean diff
    fidelity: dict[str, Any] | None = None
    next_step: str = ""  # what to do next, from the fidelity
    #: --recover: distill's result, and the fidelity before recovery
    recovery: dict[str, Any] | None = None
    #: --precision int8/auto: the int8 convs, the ranges' source, the structural check
    precision: dict[str, Any] | None = None
    #: --objective latency (fp32): the plan's network timed against the params objective's
    latency_check: dict[str, Any] | None = None

    @property
    def replaced(self) -> int:
        return sum(1 for c in self.convs if c["design"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "output": self.output,
            "options": self.options,
            "convs": self.convs,
            "totals": self.totals,
            "verification": self.verification,
            "fidelity": self.fidelity,
            "message": self.message,
            "quantized_convs": self.quantized_convs,
            "next_step": self.next_step,
            **({"widen": self.widen} if self.widen is not None else {}),
            **({"recovery": self.recovery} if self.recovery is not None else {}),
            **({"precision": self.precision} if self.precision is not None else {}),
            **({"latency_check": self.latency_check} if self.latency_check is not None else {}),
        }


@dataclass(frozen=True)
class ModelCounts:
    """What the totals compare against, counted on the model before any pass ran."""

    params: int  # every floating-point and 8-/4-bit integer constant (graph/counts.py)
    conv_params: int  # weights + biases of the main graph's Conv nodes
    convs: int  # the main graph's Conv nodes

    @classmethod
    def of(cls, model: onnx.ModelProto) -> ModelCounts:
        convs = sum(1 for n in model.graph.node if n.op_type == "Conv")
        return cls(all_params(model), conv_params(model), convs)


def conv_row(
    site: ConvSite,
    real: Realisation | None,
    reason: str | None,
    note: str | None,
    replacement: Replacement | None = None,
) -> dict[str, Any]:
    """One row of ``convs``: what was decided for ``site`` and what it costs before and after."""
    spec = site.spec
    macs = site.macs()
    macs_after = macs
    if real is not None:
        ins, outs = site.in_spatial, site.out_spatial
        per_image = real.macs(ins, outs) if ins is not None and outs is not None else None
        macs_after = None if per_image is None or site.batch is None else per_image * site.batch
    return {
        "name": site.name,
        "design": real.design if real else None,
        "groups": real.group_dict if real else None,
        "bottleneck": real.bottleneck if real else None,
        "params_before": spec.params if spec else None,
        "params_after": (real.params if real else spec.params) if spec else None,
        "macs_before": macs,
        "macs_after": macs_after,
        "reason": reason,
        "note": note,
        "init_error": replacement.init_error if replacement else None,
        "init_output_error": replacement.init_output_error if replacement else None,
    }


def _sum(rows: list[dict[str, Any]], key: str) -> int | None:
    values = [r[key] for r in rows if r[key] is not None]
    return sum(values) if len(values) == len(rows) else None


def _ratios(t: dict[str, Any]) -> dict[str, Any]:
    for what in ("params", "conv_params", "conv_macs"):
        b, a = t[f"{what}_before"], t[f"{what}_after"]
        t[f"{what}_ratio"] = a / b if a is not None and b else None
    return t


def reduce_totals(
    rows: list[dict[str, Any]], before: ModelCounts, after: onnx.ModelProto
) -> dict[str, Any]:
    """Mode 1: the rows summed (conv parameters and MACs) and the whole model's parameters."""
    return _ratios(
        {
            "convs": len(rows),
            "replaced": sum(1 for r in rows if r["design"]),
            "params_before": before.params,
            "params_after": all_params(after),
            "conv_params_before": _sum(rows, "params_before"),
            "conv_params_after": _sum(rows, "params_after"),
            "conv_macs_before": _sum(rows, "macs_before"),
            "conv_macs_after": _sum(rows, "macs_after"),
        }
    )


def widen_totals(
    rows: list[dict[str, Any]], before: ModelCounts, after: onnx.ModelProto
) -> dict[str, Any]:
    """Mode 2: the main graph's Conv nodes counted before and after (widths change every row)."""
    return _ratios(
        {
            "convs": before.convs,
            "replaced": sum(1 for r in rows if r["design"]),
            "params_before": before.params,
            "params_after": all_params(after),
            "conv_params_before": before.conv_params,
            "conv_params_after": conv_params(after),
            "conv_macs_before": None,
            "conv_macs_after": None,
        }
    )


def quantized_message(names: list[str]) -> str:
    """'' or the sentence saying that quantized convs are left as they are."""
    if not names:
        return ""
    return f"{len(names)} quantized convs (QLinearConv/ConvInteger) are not rewritten"


def reduce_message(replaced: int, convs: int, int8: int = 0) -> str:
    """The run in one line; ``int8``: how many convs ``--precision`` wrote in int8."""
    both = f" ({int8} in int8)" if int8 else ""
    if not replaced:
        if int8:
            return f"no conv was replaced by an SK design; {int8} of {convs} convs in int8"
        return "no conv was replaced: the model is written unchanged"
    return f"replaced {replaced} of {convs} convs{both}"


def widen_section(
    widen: dict[str, Any], totals: dict[str, Any], budget: str, widen_init: str
) -> dict[str, Any]:
    """The ``widen`` section: the widen pass's solution and how closely the budget was met."""
    achieved = totals["conv_params_after" if budget == "conv" else "params_after"]
    target = widen["target"]
    return {
        "scale": widen["scale"],
        "budget": budget,
        "target": target,
        "achieved": achieved,
        "ratio": achieved / target,
        "met": abs(achieved / target - 1) <= BUDGET_TOLERANCE,
        "widen_init": widen_init,
        "spaces_free": widen["spaces_free"],
        "spaces_frozen": widen["spaces_frozen"],
        "frozen_by": widen["frozen_by"],
        "layers": widen["layers"],
    }


def widen_message(section: dict[str, Any]) -> str:
    spaces = section["spaces_free"] + section["spaces_frozen"]
    met = "" if section["met"] else " (budget not met within ±1%)"
    return (
        f"widened {section['spaces_free']} of {spaces} channel spaces by s = "
        f"{section['scale']:.4f}; {section['budget']} params {section['achieved']} = "
        f"{section['ratio']:.4f} × the budget {section['target']}{met}"
    )


#: every output at least this close (cosine) to the original's reads as "matches closely"
CLOSE_COSINE = 0.999


def next_step(fidelity: dict[str, Any], output: str | None, recovered: bool = False) -> str:
    """One sentence: what to do with the optimized model, given its fidelity to the original
    (``recovered``: after ``--recover``)."""
    # an integer output (class indices, picks) is as close as the fraction of equal elements
    cosines = [o.get("equal_fraction", o["cosine"]) for o in fidelity["outputs"]]
    if any(c is None for c in cosines):
        return (
            "next: an output is not finite on this input (NaN or Inf), so its fidelity is "
            "unknown: give --inputs FILE.npz with inputs in the model's domain"
        )
    if not cosines or min(cosines) >= CLOSE_COSINE:
        return (
            f"next: the outputs match the original closely (cosine >= {CLOSE_COSINE}); check "
            "accuracy on your own data with onnx-sk compare before deploying"
        )
    out = output or "OUT.onnx"
    if recovered:
        return (
            f"next: after recovery the outputs still differ from the original (lowest cosine "
            f"{min(cosines):.3f}): give --recover more unlabelled samples, --recover-epochs or "
            f"--recover-minutes, or fine-tune with labels: onnx-sk export-torch {out} OUT.pt "
            "gives a trainable torch module"
        )
    return (
        f"next: the outputs differ from the original (lowest cosine {min(cosines):.3f}), so "
        "recover before use: onnx-sk distill IN.onnx "
        f"{out} RECOVERED.onnx --data INPUTS.npz trains it to reproduce the original on "
        "unlabelled inputs (or in one step: optimize --recover INPUTS.npz); with labels, "
        f"onnx-sk export-torch {out} OUT.pt gives a trainable torch module (optimize with "
        "--for-training first to train BN after each new stage)"
    )
