#!/usr/bin/env python
"""Turn an ONNX model's initializers into ``Constant`` nodes (Paddle-style weights).

Some exporters (older paddle2onnx, hand-built graphs, some TF paths) put weights
in ``Constant`` nodes instead of graph initializers. This script makes such a
model from any exported one (onnx + onnxruntime + numpy only):

    python models/make_torch_models.py tiny_cnn --opset 17 --dynamic batch \
        -o /tmp/tiny_cnn.onnx
    python models/make_constant_weights.py /tmp/tiny_cnn.onnx -o models/const_weights.onnx --ref

Each initializer ``W`` becomes a node ``Constant() -> W`` (attribute ``value``),
placed before the first node; initializers listed as graph inputs are removed
from the inputs. With ``--ref`` the script writes models/ref/<name>.npz holding a
random input and the *source* model's onnxruntime output on it.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import helper


def initializers_to_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = list(g.initializer)
    names = {t.name for t in inits}
    consts = [
        helper.make_node("Constant", [], [t.name], name=f"{t.name}__const", value=t) for t in inits
    ]
    del g.initializer[:]
    keep_inputs = [i for i in g.input if i.name not in names]
    del g.input[:]
    g.input.extend(keep_inputs)
    nodes = consts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    model.producer_name = "onnx-sk models/make_constant_weights.py"
    model.producer_version = "0.1.0"
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="source ONNX model (initializers inside the file)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--ref", action="store_true", help="write models/ref/<name>.npz")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    src = onnx.load(a.src)
    out = initializers_to_constants(src)
    onnx.checker.check_model(out, full_check=True)
    onnx.save_model(out, a.output)
    n_const = sum(n.op_type == "Constant" for n in out.graph.node)
    print(f"wrote {a.output}: {n_const} Constant nodes, {len(out.graph.initializer)} initializers")
    if a.ref:
        import onnxruntime as ort

        sess_src = ort.InferenceSession(a.src, providers=["CPUExecutionProvider"])
        sess_out = ort.InferenceSession(a.output, providers=["CPUExecutionProvider"])
        inp = sess_src.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        x = np.random.default_rng(a.seed).standard_normal(shape).astype(np.float32)
        (y,) = sess_src.run(None, {inp.name: x})
        (y2,) = sess_out.run(None, {sess_out.get_inputs()[0].name: x})
        assert np.allclose(y, y2, atol=1e-6), "Constant-node model differs from its source"
        here = os.path.dirname(os.path.abspath(__file__))
        stem = os.path.basename(a.output)[: -len(".onnx")]
        os.makedirs(os.path.join(here, "ref"), exist_ok=True)
        ref = os.path.join(here, "ref", stem + ".npz")
        np.savez_compressed(ref, input=x, output=y)
        print(f"wrote {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
