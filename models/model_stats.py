#!/usr/bin/env python
"""Print op counts, conv/Gemm parameter counts and MACs of ONNX models (onnx only).

MACs: Conv = c_out * c_in/group * kh*kw * H_out*W_out (per image, batch 1);
Gemm/MatMul = in*out. Parameters: conv weight+bias, Gemm/MatMul weight+bias, and
all float initializers/Constant tensors. Shapes come from onnx shape inference
with dynamic axes bound by ``--shape`` (default 1x3xSxS, S from the model or 224).

    python models/model_stats.py models/big/resnet50.onnx
"""

from __future__ import annotations

import argparse
import collections
import sys

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference


def _fix_input(model: onnx.ModelProto, shape: list[int] | None) -> None:
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        default = shape or [1] + [d.dim_value or 224 for d in dims[1:]]
        for d, v in zip(dims, default, strict=False):
            if not d.dim_value:
                d.ClearField("dim_param")
                d.dim_value = v
        break


def stats(path: str, shape: list[int] | None = None) -> dict:
    model = onnx.load(path)
    _fix_input(model, shape)
    model = shape_inference.infer_shapes(model, data_prop=True)
    g = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    shapes: dict[str, list[int]] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]

    def shp(name):
        return list(consts[name].shape) if name in consts else shapes.get(name)

    ops = collections.Counter(n.op_type for n in g.node)
    conv_params = conv_macs = fc_params = fc_macs = 0
    for n in g.node:
        if n.op_type in ("Conv", "QLinearConv", "ConvInteger"):
            wi = 3 if n.op_type == "QLinearConv" else 1
            w, y = shp(n.input[wi]), shp(n.output[0])
            if not w or not y:
                continue
            conv_params += int(np.prod(w))
            bi = 8 if n.op_type == "QLinearConv" else 2
            if len(n.input) > bi and n.input[bi]:
                conv_params += w[0]
            conv_macs += int(np.prod(w)) * int(np.prod(y[2:]))
        elif n.op_type in ("Gemm", "MatMul"):
            w = shp(n.input[1])
            if n.input[1] in consts and w:
                fc_params += int(np.prod(w))
                fc_macs += int(np.prod(w))
                if len(n.input) > 2 and n.input[2] in consts:
                    fc_params += int(np.prod(shp(n.input[2])))
    total = sum(int(v.size) for v in consts.values() if v.dtype.kind == "f")
    return dict(
        ops=dict(ops),
        conv_params=conv_params,
        conv_macs=conv_macs,
        fc_params=fc_params,
        fc_macs=fc_macs,
        float_params=total,
        macs=conv_macs + fc_macs,
        opset=[(o.domain or "ai.onnx", o.version) for o in model.opset_import],
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+")
    p.add_argument("--shape", help="input shape, e.g. 1,3,224,224")
    a = p.parse_args(argv)
    shape = [int(s) for s in a.shape.split(",")] if a.shape else None
    for path in a.paths:
        s = stats(path, shape)
        print(f"{path}: opset {s['opset']}")
        print(f"  ops: {s['ops']}")
        print(f"  conv weight+bias params: {s['conv_params']:,}   conv MACs: {s['conv_macs']:,}")
        print(f"  fc params: {s['fc_params']:,}   fc MACs: {s['fc_macs']:,}")
        print(
            f"  total MACs: {s['macs']:,} ({s['macs'] / 1e9:.3f} G)   "
            f"all float params: {s['float_params']:,} ({s['float_params'] / 1e6:.2f} M)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
