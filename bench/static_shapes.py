"""Static shuffle targets vs the Shape → Reshape(Shape) form: unknown dims and latency.

``optimize`` (``--design gc-pwg``: a shuffle in every replacement) writes the channel shuffle with
constant reshape targets where the model's C/H/W are static. This script rewrites that output
back to the dynamic form (``Reshape [0, g, C/g, -1]`` and ``Reshape(·, Shape(x))``, what onnx-sk
wrote before) and reports, for the input, the static SK model and the dynamic one: tensors with
an unknown non-batch dim after ``onnx.shape_inference`` (no data propagation, as converters run
it) and ONNX Runtime latency (CPU, 1 thread, ORT_ENABLE_ALL, runs interleaved, median of the
round-by-round ratios).

    python bench/static_shapes.py models/big/resnet18.onnx --out bench/results/static_shapes_resnet18.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import onnx_sk
from onnx_sk.runtime.feeds import random_inputs


def unknown_tensors(model: onnx.ModelProto) -> int:
    g = onnx.shape_inference.infer_shapes(model).graph
    return sum(
        1
        for vi in (*g.value_info, *g.output)
        if not vi.type.tensor_type.HasField("shape")
        or any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim[1:])
    )


def dynamic_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every shuffle written as Shape → Reshape(Shape)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    nodes, dropped = [], set()
    for node in g.node:
        if node.op_type == "Reshape" and node.name.endswith("/shuffle/Reshape_back"):
            first = producer[producer[node.input[0]].input[0]]  # Reshape_back ← Transpose ← Reshape
            x = first.input[0]
            split = numpy_helper.to_array(inits[first.input[1]]).copy()
            split[-1] = -1
            inits[first.input[1]].CopyFrom(numpy_helper.from_array(split, first.input[1]))
            shape = f"{node.name}/dynamic_shape"
            nodes.append(helper.make_node("Shape", [x], [shape], f"{node.name}/Shape"))
            dropped.add(node.input[1])
            node.input[1] = shape
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    kept = [i for i in g.initializer if i.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(kept)
    # Shape nodes must come before their readers: put each right after its input's producer
    return _toposorted(out)


def _toposorted(model: onnx.ModelProto) -> onnx.ModelProto:
    g = model.graph
    ready = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    pending, order = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(t in ready for t in n.input):
                order.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        assert len(rest) < len(pending), "cycle"
        pending = rest
    del g.node[:]
    g.node.extend(order)
    return model


def latency(paths: list[Path], feeds: dict, rounds: int) -> list[list[float]]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = [
        ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in paths
    ]
    for s in sessions:
        for _ in range(3):
            s.run(None, feeds)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for k, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        static_path, dynamic_path = Path(tmp) / "static.onnx", Path(tmp) / "dynamic.onnx"
        static, report = onnx_sk.optimize(
            args.model, static_path, design="gc-pwg", include_first=True
        )
        dynamic = dynamic_form(static)
        onnx.save(dynamic, dynamic_path)
        original = onnx.load(args.model)
        feeds = random_inputs(static, np.random.default_rng(0), None, 224)
        a, b = (
            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)
            for p in (static_path, dynamic_path)
        )
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        times = latency([static_path, dynamic_path], feeds, args.rounds)
    ratios = [d / s for s, d in zip(times[0], times[1], strict=True)]
    doc = {
        "model": args.model,
        "replaced": report.replaced,
        "unknown_tensors": {
            "input": unknown_tensors(original),
            "sk_static": unknown_tensors(static),
            "sk_dynamic": unknown_tensors(dynamic),
        },
        "p50_ms": {
            "sk_static": 1e3 * statistics.median(times[0]),
            "sk_dynamic": 1e3 * statistics.median(times[1]),
        },
        "dynamic_over_static": statistics.median(ratios),
        "rounds": args.rounds,
    }
    print(json.dumps(doc, indent=2))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
