"""Latency-aware design choice: measure each conv shape's candidates on the target runtime.

The papers chose designs by parameter count and found the speed-up "not scalable to the parameter
reduction"; ONNX Runtime runs grouped convs far below their MAC ideal unless their channels per
group fit its blocked layout. So ``--objective latency`` measures instead of counting.

For every distinct conv *shape* (``shape_key``: c_in, c_out, kernel_shape, strides, pads,
dilations, auto_pad, bias, input N×H×W, bottleneck ratio) the dense conv and each candidate are
built as small ONNX models (:mod:`onnx_sk.runtime.micro`: the candidate by
:func:`onnx_sk.graph.build.replace_conv`, exactly as in the optimized network, between two 1×1
convs that ORT runs in its NCHWc layout, as a conv's neighbours in a CNN are) and run on the
target provider and thread count at ORT_ENABLE_ALL:

- candidates (``candidates``): every admissible integer realisation of each design whose
  information field equals the dense conv's and whose MACs are below the dense conv's, pruned
  per design to the ``BEST_BY_MACS`` cheapest by MACs plus the ``BEST_BLOCKED`` cheapest whose
  grouped stages have channels per group (in and out) that are multiples of 16, and of 8 (the
  NCHWc block sizes of AVX-512 and AVX2 CPUs); a candidate with a shuffle comes twice, with the
  Reshape→Transpose→Reshape shuffle and with the Gather shuffle;
- timing (``measure_shape``): ``WARMUP`` runs each, then rounds in which every model runs once
  in a seeded random order, as many rounds as fit in ``budget_s`` (between ``MIN_ROUNDS`` and
  ``MAX_ROUNDS``); a candidate's time in round r is t_context(candidate)[r] −
  t_context(dense)[r] + t_dense_alone[r] (the neighbours' time out, the layout conversions the
  candidate causes in), its ``speedup`` the median over rounds of t_dense_alone[r] / that (pair
  by pair, so machine noise cancels), ``ms`` its median. Timed alone, a candidate that cannot
  run in NCHWc looked as fast as one that can, and cost its network ~0.2 ms more (ResNet-18's
  replaced stem: pwg-dw-pwg N=16 0.588 ms alone vs N=1 0.585 ms; 0.756 vs 0.549 ms in context);
- choice (``decide``): the candidate with the greatest speedup, if that is at least
  ``MIN_SPEEDUP``; otherwise the conv is kept with the reason "no SK design is faster than the
  dense conv on <provider>". A conv is never replaced by something measured slower.

Measurements go into a :class:`onnx_sk.runtime.lut.Lut` so a shape is measured once per machine.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence

import numpy as np

from onnx_sk.errors import UserError
from onnx_sk.graph.convs import ConvSite
from onnx_sk.maths.designs import DESIGNS, Realisation, realisations
from onnx_sk.maths.infofield import field_of_conv, field_of_stages
from onnx_sk.maths.spec import DENSE as DENSE_KIND
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.runtime.lut import Lut
from onnx_sk.runtime.micro import micro_model
from onnx_sk.runtime.progress import Progress
from onnx_sk.runtime.quantize import qdq_micro
from onnx_sk.runtime.session import warm_session

log = logging.getLogger(__name__)

BEST_BY_MACS = 2
BEST_BLOCKED = 2
BLOCKS = (16, 8)
MIN_SPEEDUP = 1.05
CAPACITY_SLACK = 0.10  # decide(capacity=True): give up at most 10% of the fastest's saving
WARMUP = 2
MIN_ROUNDS, MAX_ROUNDS = 7, 40
BUDGET_S = 1.5
DENSE = "dense"


def shape_key(
    spec: ConvSpec, in_shape: tuple[int, ...], ratio: float, precision: str = "fp32"
) -> str:
    """The LUT key of a conv shape; an int8 entry's key ends in ``-int8`` (fp32 keys have no
    suffix: the tables written before precisions existed stay valid)."""
    n, _, *spatial = in_shape

    def j(v: Sequence[int]) -> str:
        return "x".join(str(int(x)) for x in v)

    return (
        f"c{spec.c_in}-f{spec.c_out}-k{j(spec.kernel_shape)}-s{j(spec.strides)}-p{j(spec.pads)}"
        f"-d{j(spec.dilations)}-{spec.auto_pad}-{'bias' if spec.has_bias else 'nobias'}"
        f"-in{n}x{j(spatial)}-r{ratio:g}"
        + (f"-g{spec.group}" if spec.group > 1 else "")
        + ("" if precision == "fp32" else f"-{precision}")
    )


def candidate_key(real: Realisation) -> str:
    parts = [real.design, *(f"{k}={v}" for k, v in real.groups)]
    if real.bottleneck:
        parts.append(f"K={real.bottleneck}")
    if real.shuffles:
        parts.append(real.shuffle_impl)
    return " ".join(parts)


def _blocked(real: Realisation, block: int) -> bool:
    """Every grouped (not depthwise) stage has in and out channels per group divisible by block."""
    for s in real.stages:
        if s.group > 1 and not (s.group == s.c_in == s.c_out):
            if (s.c_in // s.group) % block or (s.c_out // s.group) % block:
                return False
    return True


def _keeps_field(real: Realisation, spec: ConvSpec) -> bool:
    got = field_of_stages(real.stages, spec.kernel_shape, spec.strides, spec.dilations)
    return got.equals(field_of_conv(spec))


def candidates(spec: ConvSpec, ratio: float, designs: list[str] | None = None) -> list[Realisation]:
    """The pruned candidate set for one conv (module docstring), shuffle variants included."""
    out: list[Realisation] = []
    for name in designs or list(DESIGNS):
        reals = [
            r
            for r in realisations(name, spec, ratio)
            if r.macs_per_output_pixel() < spec.weight_params
        ]
        reals.sort(key=lambda r: (r.macs_per_output_pixel(), r.shuffles, r.groups))
        keep = reals[:BEST_BY_MACS]
        for block in BLOCKS:
            keep += [r for r in reals if _blocked(r, block)][:BEST_BLOCKED]
        seen = set()
        for r in keep:
            if r.groups in seen or not _keeps_field(r, spec):
                continue
            seen.add(r.groups)
            out.append(r)
            if r.shuffles:
                out.append(dataclasses.replace(r, shuffle_impl="gather"))
    return out


def _round(sessions: list, order: np.ndarray, x: np.ndarray, times: list[list[float]]) -> None:
    for i in order:
        start = time.perf_counter()
        sessions[i].run(None, {"x": x})
        times[i].append(time.perf_counter() - start)


def measure_shape(
    spec: ConvSpec,
    in_shape: tuple[int, ...],
    provider: str,
    threads: int,
    ratio: float,
    seed: int = 0,
    budget_s: float = BUDGET_S,
) -> dict:
    """Time the dense conv and every candidate, interleaved; returns the LUT entry."""
    return measure_precisions(spec, in_shape, provider, threads, ratio, seed, budget_s)["fp32"]


def measure_precisions(
    spec: ConvSpec,
    in_shape: tuple[int, ...],
    provider: str,
    threads: int,
    ratio: float,
    seed: int = 0,
    budget_s: float = BUDGET_S,
    int8: bool = False,
) -> dict[str, dict]:
    """Time the dense conv and every candidate, interleaved; returns precision → LUT entry.

    Every candidate, and the dense conv once more, runs between NCHWc neighbours
    (:mod:`onnx_sk.runtime.micro`); per round, a candidate's time is
    ``t(context, candidate) − t(context, dense) + t(dense alone)``, so the layout conversions
    it causes next to NCHWc convs count, and the neighbours' own time does not.

    ``int8``: the dense conv and every candidate also in QDQ int8 form
    (:func:`onnx_sk.runtime.quantize.qdq_micro`, its Q/DQ included; the neighbours stay fp32),
    in the same rounds; the ``int8`` entry's speedups are over the fp32 dense conv, and it holds
    ``dense_int8``. Only a dense conv (``spec.kind``) has SK candidates: another conv is timed
    dense only."""
    cands = candidates(spec, ratio) if spec.kind == DENSE_KIND else []
    x = np.random.default_rng(seed).standard_normal(in_shape).astype(np.float32)
    ctx = [("dense", micro_model(spec, in_shape, None, seed, context=True))]
    ctx += [(candidate_key(r), micro_model(spec, in_shape, r, seed, context=True)) for r in cands]
    if int8:
        ctx += [(f"{k} int8", qdq_micro(m, x)) for k, m in list(ctx)]
    models = [("dense alone", micro_model(spec, in_shape, None, seed)), *ctx]
    sessions = [
        warm_session(m, provider, threads, {"x": x}, f"the {what} conv") for what, m in models
    ]
    times: list[list[float]] = [[] for _ in sessions]
    rng = np.random.default_rng(seed)
    for _ in range(WARMUP):
        _round(sessions, np.arange(len(sessions)), x, [[] for _ in sessions])
    start = time.perf_counter()
    _round(sessions, rng.permutation(len(sessions)), x, times)
    per_round = time.perf_counter() - start
    rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, math.ceil(budget_s / max(per_round, 1e-9))))
    for _ in range(rounds - 1):
        _round(sessions, rng.permutation(len(sessions)), x, times)
    dense, dense_ctx = np.asarray(times[0]), np.asarray(times[1])
    own = [_in_context(t, dense_ctx, dense) for t in times[1:]]  # own[0]: the dense conv
    n = 1 + len(cands)
    out = {"fp32": _entry(spec, in_shape, provider, threads, ratio, dense, cands, own[1:n])}
    if int8:
        entry = _entry(spec, in_shape, provider, threads, ratio, dense, cands, own[n + 1 :])
        entry["precision"] = "int8"
        entry["dense_int8"] = _timing(dense, own[n])
        out["int8"] = entry
    return out


#: a time in context is never taken below this fraction of the dense conv's (noise guard)
MIN_OWN = 0.02


def _in_context(t: list[float], dense_ctx: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """Per round, a model's time in context less the neighbours' (the dense conv's in context,
    less its time alone)."""
    own = np.asarray(t) - dense_ctx + dense
    return np.maximum(own, MIN_OWN * dense)


def _timing(dense: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """The median ms of ``t`` and its paired median speedup over the dense conv."""
    return {
        "ms": float(np.median(t)) * 1e3,
        "speedup": float(np.median(dense / t)),
    }


def _entry(
    spec: ConvSpec,
    in_shape: tuple[int, ...],
    provider: str,
    threads: int,
    ratio: float,
    dense: np.ndarray,
    cands: list[Realisation],
    times: list[np.ndarray],
) -> dict:
    entry_cands = {}
    for real, t in zip(cands, times, strict=True):
        entry_cands[candidate_key(real)] = {
            "design": real.design,
            "groups": real.group_dict,
            "bottleneck": real.bottleneck,
            "shuffle": real.shuffle_impl if real.shuffles else None,
            "macs_ratio": real.macs_per_output_pixel() / spec.weight_params,
            **_timing(dense, t),
        }
    return {
        "provider": provider,
        "threads": threads,
        "shape": {
            "c_in": spec.c_in,
            "c_out": spec.c_out,
            "kernel_shape": list(spec.kernel_shape),
            "strides": list(spec.strides),
            "pads": list(spec.pads),
            "dilations": list(spec.dilations),
            "auto_pad": spec.auto_pad,
            "has_bias": spec.has_bias,
            "input": list(in_shape),
            "bottleneck_ratio": ratio,
        },  # fmt: skip
        "dense_ms": float(np.median(dense)) * 1e3,
        "rounds": len(dense),
        "candidates": entry_cands,
    }


def in_shape_of(site: ConvSite) -> tuple[int, ...] | None:
    shape = site.in_shape
    if shape is None or len(shape) < 3 or any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape)  # type: ignore[arg-type]


def fill(
    lut: Lut,
    sites: list[ConvSite],
    provider: str,
    threads: int,
    ratio: float,
    seed: int = 0,
    progress: Progress | None = None,
    precisions: tuple[str, ...] = ("fp32",),
) -> int:
    """Measure every shape of ``sites`` the LUT lacks in one of ``precisions`` (fp32, int8: both
    are measured together); returns how many shapes were measured."""
    todo: dict[str, tuple[ConvSpec, tuple[int, ...]]] = {}
    for site in sites:
        shape = in_shape_of(site)
        if site.spec is None or shape is None:
            continue
        spec = site.spec
        missing = [
            p
            for p in precisions
            if lut.get(provider, threads, shape_key(spec, shape, ratio, p)) is None
        ]
        if missing:
            todo.setdefault(shape_key(spec, shape, ratio, missing[0]), (spec, shape))
    if todo and lut.foreign:
        key = next(iter(todo))
        raise UserError(
            f"the target's latency table {lut.path} has no measurement of conv shape {key} on "
            f"{provider} with {threads} thread(s): run onnx-sk profile-lut on the target for this model"
        )
    for i, (key, (spec, shape)) in enumerate(todo.items()):
        if progress is not None:
            progress(i / len(todo), key)
        log.info("measuring %s on %s × %d threads", key, provider, threads)
        int8 = "int8" in precisions
        entries = measure_precisions(spec, shape, provider, threads, ratio, seed, int8=int8)
        for precision, entry in entries.items():
            lut.put(provider, threads, shape_key(spec, shape, ratio, precision), entry)
    if progress is not None:
        progress(1.0, "done")
    return len(todo)


def realise(spec: ConvSpec, cand: dict, ratio: float) -> Realisation | None:
    """The realisation a LUT candidate names, for this conv (None if not admissible here)."""
    for real in realisations(cand["design"], spec, ratio):
        if real.group_dict == cand["groups"] and real.bottleneck == cand["bottleneck"]:
            impl = cand.get("shuffle") or "reshape"
            return dataclasses.replace(real, shuffle_impl=impl)
    return None


def decide(
    site: ConvSite,
    entry: dict,
    designs: list[str] | None,
    ratio: float,
    capacity: bool = False,
) -> tuple[Realisation | None, str | None, str]:
    """(realisation, None, note) for the fastest candidate, or (None, reason, note).

    ``capacity`` (``--recover``: distillation, not the fit, carries the accuracy, and a student
    with more weights learns more from the same samples): among the candidates that keep at
    least 1 − ``CAPACITY_SLACK`` of the time the fastest one saves over the dense conv, the one
    with the most multiply-adds per output pixel (for one field, the most weights) wins; so the
    network keeps at least that share of the fastest choice's saving."""
    assert site.spec is not None
    provider, threads = entry["provider"], entry["threads"]
    allowed = [
        (key, c)
        for key, c in entry["candidates"].items()
        if designs is None or c["design"] in designs
    ]
    if not allowed:
        return None, f"no SK candidate of {', '.join(designs or DESIGNS)} to measure", ""
    key, best = max(allowed, key=lambda kc: kc[1]["speedup"])
    why = ""
    if capacity:
        limit = best["ms"] + CAPACITY_SLACK * max(entry["dense_ms"] - best["ms"], 0.0)
        near = [
            kc for kc in allowed if kc[1]["ms"] <= limit and kc[1]["speedup"] >= MIN_SPEEDUP
        ] or [(key, best)]
        chosen = max(near, key=lambda kc: (kc[1]["macs_ratio"], kc[1]["speedup"]))
        if chosen[0] != key:
            why = (
                f"; the most weights keeping {1 - CAPACITY_SLACK:.0%} of the fastest's saving "
                f"({key})"
            )
        key, best = chosen
    where = f"{provider}, {threads} thread{'s' if threads > 1 else ''}"
    note = (
        f"latency on {where}: {best['ms']:.3g} ms vs dense {entry['dense_ms']:.3g} ms "
        f"({best['speedup']:.2f}×, {key}{why})"
    )
    if best["speedup"] < MIN_SPEEDUP:
        return (
            None,
            f"no SK design is faster than the dense conv on {provider}",
            f"best measured: {note}",
        )
    real = realise(site.spec, best, ratio)
    if real is None:  # the LUT entry came from another bottleneck ratio: never here (ratio in key)
        return None, f"measured candidate {key} is not admissible for this conv", note
    return real, None, note
