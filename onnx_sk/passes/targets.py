"""FitTargetsPass (``--init approx``): what each conv's SK weights are fitted to.

For every eligible conv, a :class:`~onnx_sk.maths.approx.Target`: the per-channel scale of the
inference BN that follows it (:func:`onnx_sk.graph.batchnorm.bn_scales`), and with
``--calibration FILE.npz`` the patches of its actual input activations on the user's data
(:func:`onnx_sk.runtime.calibration.calibration_patches`: the original run in ONNX Runtime on
the file's samples, streamed in batches the model accepts).
Changes nothing in the model.
"""

from __future__ import annotations

import onnx

from onnx_sk.graph.batchnorm import bn_scales
from onnx_sk.maths.approx import Target
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext
from onnx_sk.runtime.calibration import calibration_patches


class FitTargetsPass:
    name = "fit-targets"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        scales = bn_scales(model)
        eligible = [s for s in ctx.sites if s.reason is None]
        calibration = ctx.options.fitting.calibration
        data = {}
        if calibration is not None:
            data = calibration_patches(calibration, model, eligible, ctx.options.seed)
        ctx.targets = {
            s.node.output[0]: Target(scales.get(s.node.output[0]), data.get(s.node.output[0]))
            for s in eligible
        }
        return PassResult(model, modified=False)
