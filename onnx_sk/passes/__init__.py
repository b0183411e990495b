"""Graph passes, one per file, behind one contract (:mod:`onnx_sk.passes.base`).

A pass reads what it needs from the shared :class:`~onnx_sk.passes.context.PassContext` and
returns the model and whether it changed it; :func:`~onnx_sk.passes.base.run_passes` runs a
list of them and names the pass that failed. The pipelines (lists of passes per mode) are in
:mod:`onnx_sk.pipeline`.

=================  ================================================================  =========
pass               what it does                                                       changes
=================  ================================================================  =========
plan               every conv and its decision (policy, then the objective)          no
fit-targets        BN scales and calibration patches for ``--init approx``           no
error-budget       ``--max-error``: keep only designs that fit within τ              no
init-weights       the stage weights of every replaced conv, the report's rows       no
dense-twin         the dense-equivalent model's outputs (verification reference)     no
reduce             write the SK designs into the graph                               yes
training-bn        ``--for-training``: identity BN after every new stage             yes
widen              scale the free channel spaces by one factor (Mode 2)             yes
provenance         producer onnx-sk, its version and options in metadata_props       yes
verify             checker, information fields, outputs vs the reference             no
fidelity           outputs vs the original model's: cosine, max/mean abs diff        no
=================  ================================================================  =========
"""
