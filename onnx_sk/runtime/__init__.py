"""Everything that runs a model: the only package that imports onnxruntime.

- ``session``: sessions with explicit providers, threads and optimisation level;
- ``feeds``: real graph inputs, seeded random inputs, inputs from an .npz;
- ``verify``: the numeric half of verification (outputs against the dense twin);
- ``compare``: how far apart two models' outputs are;
- ``calibration``: the planned convs' input activations on the user's data;
- ``latency``, ``lut``, ``profile_lut``: measured design choice and its latency table;
- ``bench``, ``profile``, ``machine``: interleaved benchmarks, ORT profiles, machine identity;
- ``blas``: one BLAS thread for the weight fits.
"""
