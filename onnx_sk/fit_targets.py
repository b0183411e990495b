"""What each conv's SK weights are fitted to, read from the graph and from calibration data.

- **BN folding** (``bn_scales``): a conv whose only consumer is an inference-mode
  ``BatchNormalization`` with constant ``scale`` and ``var`` computes, through the BN,
  ``diag(γ / sqrt(var + ε)) · W`` up to a bias: ``approx`` fits that product (the graph keeps the BN).
- **Calibration** (``collect_patches``): the original model runs in ONNX Runtime on the user's
  input tensors (``--calibration FILE.npz``) with every planned conv's input added as a graph
  output; from each input activation ``x  # [N, C, H, W]`` up to ``max_patches`` output
  positions are drawn (seeded) and their receptive fields, with the conv's ``pads``, ``strides``
  and ``dilations``, become the columns of ``L  # [C·kh·kw, P]`` (scaled by 1/sqrt(P)), so
  ``||E·L||_F² `` is the mean squared output error of a kernel error ``E``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from onnx_sk.maths.approx import Target
from onnx_sk.maths.patches import patches
from onnx_sk.graph.convs import ConvSite, attrs
from onnx_sk.errors import UserError
from onnx_sk.graph.index import constant_values
from onnx_sk.runtime.session import real_inputs, session

DEFAULT_MAX_PATCHES = 2048


def bn_scales(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """conv output name → γ / sqrt(var + ε) of the inference BN that alone consumes it."""
    graph = model.graph
    consts = constant_values(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    scales = {}
    for node in graph.node:
        if node.op_type != "Conv" or node.output[0] in outputs:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "BatchNormalization":
            continue
        bn = users[0]
        a = attrs(bn)
        if a.get("training_mode", 0) or len([o for o in bn.output if o]) > 1:
            continue
        gamma, var = consts.get(bn.input[1]), consts.get(bn.input[4])
        if gamma is None or var is None:
            continue
        eps = float(a.get("epsilon", 1e-5))
        scales[node.output[0]] = (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps))
    return scales


def load_calibration(
    path: str | os.PathLike, model: onnx.ModelProto, flag: str = "--calibration"
) -> dict[str, np.ndarray]:
    """The model's input tensors from an .npz (keys = input names; one array for one input)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise UserError(f"{flag} {p}: not a readable .npz file ({type(exc).__name__})") from None
    names = [vi.name for vi in real_inputs(model)]
    if len(names) == 1 and len(arrays) == 1:
        return {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UserError(
            f"{flag} {p}: no array for input(s) {', '.join(missing)} "
            f"(the file has {', '.join(arrays) or 'none'})"
        )
    return {n: arrays[n] for n in names}




def collect_patches(
    model: onnx.ModelProto,
    sites: list[ConvSite],
    feeds: dict[str, np.ndarray],
    seed: int = 0,
    max_patches: int = DEFAULT_MAX_PATCHES,
) -> dict[str, np.ndarray]:
    """conv output name → its input patches ``L`` from running the original model on ``feeds``."""
    wanted = [s for s in sites if s.spec is not None and s.spec.spatial_rank == 2 and not s.scope]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output} | set(feeds)
    for name in dict.fromkeys(s.node.input[0] for s in wanted):
        if name not in have:
            probe.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    try:
        sess = session(probe, opt_level="disabled")
        names = [o.name for o in sess.get_outputs()]
        values = dict(zip(names, sess.run(None, feeds), strict=False))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--calibration: the model does not run on these inputs: {first}") from None
    values.update(feeds)
    rng = np.random.default_rng(seed)
    return {
        s.node.output[0]: patches(s.spec, np.asarray(values[s.node.input[0]]), max_patches, rng)
        for s in wanted
    }


def targets(
    model: onnx.ModelProto,
    sites: list[ConvSite],
    calibration: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, Target]:
    """conv output name → its :class:`Target` (BN scale and, with calibration, input patches)."""
    scales = bn_scales(model)
    eligible = [s for s in sites if s.reason is None]
    data = {}
    if calibration is not None:
        data = collect_patches(model, eligible, load_calibration(calibration, model), seed)
    return {
        s.node.output[0]: Target(scales.get(s.node.output[0]), data.get(s.node.output[0]))
        for s in eligible
    }
