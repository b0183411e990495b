"""int8 in ONNX Runtime: activation ranges, QDQ micro-models, the int8 kernels ORT picks, and the
output error of an int8 conv.

- ``activation_ranges``: the model (optimisations disabled, so every tensor exists) runs on the
  calibration feeds with the wanted tensors added as outputs; each tensor's range is its min and
  max over all samples (ONNX Runtime's ``MinMax`` calibration). The feeds are the
  ``--calibration`` file's first ``MAX_SAMPLES`` samples, in chunks of at most ``CHUNK``
  (``calibration_feeds``), else ``RANDOM_SAMPLES`` seeded standard-normal inputs
  (``seeded_feeds``; real data gives better ranges: the caller warns).
- ``qdq_micro``: a one-conv (or one-SK-subgraph) latency model with every Conv and data-movement
  node in QDQ form, its ranges from the model's own input: what the latency objective times for
  an int8 candidate, Q/DQ included.
- ``optimized_ops``: the op types of ONNX Runtime's optimized graph (ORT_ENABLE_ALL, written to
  a temporary file): int8 convs show as ``QLinearConv`` (``INT8_CONV_OPS``).
- ``relative_error``: ``||y_int8 - y_dense|| / ||y_dense||`` of a conv's int8 form against the
  fp32 dense conv on given inputs (the error ``--max-error`` counts).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.checks import first_line
from onnx_sk.graph.qdq import MOVES, activation_tensors, insert_qdq
from onnx_sk.graph.save import save_model
from onnx_sk.graph.tensors import is_large, with_outputs
from onnx_sk.runtime.compare import file_feeds
from onnx_sk.runtime.feeds import random_inputs
from onnx_sk.runtime.micro import CONTEXT_PREFIX
from onnx_sk.runtime.session import LOG_SEVERITY, session

MAX_SAMPLES = 64
CHUNK = 8
RANDOM_SAMPLES = 4
#: the op types of ONNX Runtime's int8 convs (QDQ fused on the CPU provider)
INT8_CONV_OPS = ("QLinearConv", "NhwcQLinearConv", "ConvInteger")

Feeds = dict[str, np.ndarray]


def calibration_feeds(path: str, model: onnx.ModelProto) -> Iterator[Feeds]:
    """The first ``MAX_SAMPLES`` samples of ``--calibration``, in chunks of at most ``CHUNK``."""
    left = MAX_SAMPLES
    for feeds in file_feeds(path, model, "--calibration"):
        n = min(len(v) for v in feeds.values()) if feeds else 0
        for start in range(0, n, CHUNK):
            if left <= 0:
                return
            take = min(CHUNK, left, n - start)
            yield {k: v[start : start + take] for k, v in feeds.items()}
            left -= take


def seeded_feeds(
    model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None, seed: int
) -> Iterator[Feeds]:
    """``RANDOM_SAMPLES`` seeded standard-normal inputs at the model's (or the given) shape."""
    rng = np.random.default_rng(seed)
    for _ in range(RANDOM_SAMPLES):
        yield random_inputs(model, rng, input_shapes or None)


def activation_ranges(
    model: onnx.ModelProto,
    tensors: list[str],
    feeds: Iterator[Feeds],
    keep: list[str] | None = None,
    what: str = "the model",
) -> tuple[dict[str, tuple[float, float]], Feeds, list[np.ndarray], dict[str, np.ndarray]]:
    """(tensor → (min, max) over every sample, the first feeds, the model's outputs on them,
    the values of the ``keep`` tensors on them). ONNX Runtime failing to build or run ``what``
    is a UserError naming it, with ORT's first line."""
    inputs = {i.name for i in model.graph.input}
    n_out = len(model.graph.output)
    wanted = list(dict.fromkeys([*tensors, *(keep or [])]))
    with _ort_errors(what):
        sess = session(with_outputs(model, [t for t in wanted if t not in inputs])[0])
    names = [o.name for o in sess.get_outputs()]
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    first: tuple[Feeds, list[np.ndarray], dict[str, np.ndarray]] | None = None
    for feed in feeds:
        with _ort_errors(what):
            outs = sess.run(None, feed)
        values = dict(zip(names, outs, strict=True))
        values.update(feed)
        if first is None:
            kept = {t: values[t] for t in keep or []}
            first = (feed, [values[n] for n in names[:n_out]], kept)
        for t in tensors:
            v = np.asarray(values[t], dtype=np.float32)
            lo[t] = min(lo.get(t, np.inf), float(v.min()))
            hi[t] = max(hi.get(t, -np.inf), float(v.max()))
    assert first is not None, "no calibration samples"
    return {t: (lo[t], hi[t]) for t in tensors}, *first


@contextmanager
def _ort_errors(what: str) -> Iterator[None]:
    """An ONNX Runtime failure inside as one line: ``int8 calibration: ONNX Runtime cannot run
    WHAT: <its first line>`` (a UserError passes as it is)."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"int8 calibration: ONNX Runtime cannot run {what}: {first_line(exc)}"
        ) from None


def qdq_micro(model: onnx.ModelProto, x: np.ndarray) -> onnx.ModelProto:
    """The micro-model with every Conv and data-movement node in QDQ form (ranges on ``x``),
    but its neighbours (``runtime.micro.CONTEXT_PREFIX``), which stay fp32."""
    marked = [
        n.output[0]
        for n in model.graph.node
        if n.op_type in ("Conv", *MOVES) and not n.name.startswith(CONTEXT_PREFIX)
    ]
    tensors = activation_tensors(model.graph, marked)
    ranges, *_ = activation_ranges(model, tensors, iter([{"x": x}]), what="a conv's micro-model")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    insert_qdq(out.graph, marked, ranges)
    return out


def optimized_ops(model: onnx.ModelProto, provider: str = "CPUExecutionProvider") -> Counter[str]:
    """How many nodes of each op type ONNX Runtime's optimized graph (ORT_ENABLE_ALL) has."""
    import onnxruntime as ort  # deferred, as runtime.session does (slow to import)

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.intra_op_num_threads = 1
        so.log_severity_level = LOG_SEVERITY
        source: str | bytes = model.SerializeToString() if not is_large(model) else ""
        if not source:  # over protobuf's 2 GB: through a file with external data
            source = str(save_model(model, Path(tmp) / "model.onnx", external_data=True))
        ort.InferenceSession(source, so, providers=[provider])
        optimized = onnx.load(so.optimized_model_filepath, load_external_data=False)
    return Counter(n.op_type for n in optimized.graph.node)


def relative_error(int8: onnx.ModelProto, dense: onnx.ModelProto, xs: list[np.ndarray]) -> float:
    """``||y_int8 - y_dense|| / ||y_dense||`` over the inputs ``xs`` (both models: x → y; the
    int8 one runs as the CPU provider runs it, optimisations on)."""
    a = session(int8, opt_level="all")
    b = session(dense)
    num = den = 0.0
    for x in xs:
        got = a.run(None, {"x": x})[0]
        want = b.run(None, {"x": x})[0]
        num += float(np.sum((got.astype(np.float64) - want) ** 2))
        den += float(np.sum(want.astype(np.float64) ** 2))
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))
