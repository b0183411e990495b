"""The ``--for-training`` BNs of a trained student folded into their conv stages.

``optimize --for-training`` puts an identity ``BatchNormalization`` after every new conv stage but
the last (``passes/training_bn.py``, named ``<stage conv name>/bn``) so that the stages train with
a BN, as the papers train them. Distillation trains them (scale and shift; the statistics stay
as written), and the written model should not carry them: each is folded into the conv before it
(:func:`onnx_sk.graph.batchnorm.fold_into_convs`, exact up to float rounding), then ONNX Runtime
must give the unfolded model's outputs on the first :data:`FOLD_CHECK_SAMPLES` samples
(``max |a − b| ≤ RTOL · max |b| + ATOL``), else nothing is written.
"""

from __future__ import annotations

import json

import numpy as np
import onnx

from onnx_sk.errors import VerificationError
from onnx_sk.graph.batchnorm import fold_into_convs
from onnx_sk.runtime.compare import difference
from onnx_sk.runtime.probe import Probe
from onnx_sk.runtime.verify import ATOL, RTOL
from onnx_sk.training.samples import Samples

#: samples the folded model is compared on with the unfolded one
FOLD_CHECK_SAMPLES = 8


def training_bns(student: onnx.ModelProto) -> set[str]:
    """The BNs ``--for-training`` inserted, read off a student file: its onnx-sk metadata says
    ``for_training``, and each BN is named after the Conv it follows + ``/bn``."""
    props = {e.key: e.value for e in student.metadata_props}
    try:
        options = json.loads(props.get("onnx_sk.options", "{}"))
    except ValueError:
        return set()
    if not isinstance(options, dict) or not options.get("for_training"):
        return set()
    producer = {o: n for n in student.graph.node for o in n.output}
    names = set()
    for n in student.graph.node:
        p = producer.get(n.input[0]) if n.op_type == "BatchNormalization" else None
        if p is not None and p.op_type == "Conv" and n.name == f"{p.name}/bn":
            names.add(n.name)
    return names


def fold_training_bns(
    model: onnx.ModelProto, names: set[str], samples: Samples | None, threads: int = 1
) -> int:
    """Fold the BNs ``names`` in place (see the module docstring); ``samples`` None: no check.
    Returns how many were folded."""
    if not names:
        return 0
    before = onnx.ModelProto()
    if samples is not None:
        before.CopyFrom(model)
    folded = fold_into_convs(model, names)
    if folded and samples is not None:
        feeds = samples.take(np.arange(min(FOLD_CHECK_SAMPLES, len(samples))))
        want = Probe(before, [], threads, "trained model").run(feeds)
        got = Probe(model, [], threads, "folded model").run(feeds)
        for name, w in want.items():
            d = difference(w, got[name])
            if not d.max_abs_diff <= RTOL * d.scale + ATOL:
                raise VerificationError(
                    f"folding the --for-training BNs changed output {name!r} by "
                    f"{d.max_abs_diff:.3g} (output scale {d.scale:.3g}): nothing written"
                )
    return len(folded)
