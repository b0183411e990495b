"""Calibration: the input activations of the planned convs on the user's data, as patches.

The original model runs in ONNX Runtime (optimisations disabled, so every tensor exists) on the
user's input tensors (``--calibration FILE.npz``) with every planned conv's input added as a
graph output; from each input activation ``x  # [N, C, H, W]`` up to ``max_patches`` output
positions are drawn (seeded) and their receptive fields become the columns of
``L  # [C·kh·kw, P]`` (:func:`onnx_sk.maths.patches.patches`), so ``||E·L||_F²`` is the mean
squared output error of a kernel error ``E``.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.convs import ConvSite
from onnx_sk.maths.patches import patches
from onnx_sk.runtime.session import session

DEFAULT_MAX_PATCHES = 2048


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
