"""The papers' mathematics, on plain numbers and numpy arrays; imports nothing else of onnx-sk.

- ``spec``: ConvSpec, one ONNX Conv's geometry with ONNX's attribute names;
- ``designs``: the four SK designs as data (a registry), their integer realisations and the
  dense-equivalent kernel;
- ``efficiency``: the papers' closed forms (parameters, ratios, greatest width under a budget)
  and the best integer group numbers;
- ``select``: choosing a design per conv by a counted objective (registry ``COSTS``);
- ``infofield``: the exact information field (receptive field × channel connectivity);
- ``search``: Algorithm 1, the design-space reduction;
- ``approx``, ``patches``: fitting a design's stages to a kernel (SVD, CP-ALS, data-aware);
- ``weight_init``: the initialisers (registry) and the shared He-normal draw;
- ``channel_spaces``: the union-find algebra of channel spaces that widening scales;
- ``domain``: DomainError, an argument outside the formulas' domain.
"""
