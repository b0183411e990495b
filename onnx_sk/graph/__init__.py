"""Reading and writing ONNX protobufs; runs no ONNX Runtime session.

- ``load``, ``save``, ``tensors``: loading with every check, atomic writes (``OutputFile``),
  external data, tensor sizes from headers;
- ``index``: the one shared index of a graph (producers, consumers, constants, free names);
- ``constants``: constants in one form at load (Constant nodes → initializers, Identity chains
  on constants bypassed);
- ``shapes``: shape inference with ``--input-shape`` overrides;
- ``convs``: every Conv, its spec, weights and why it can or cannot be replaced;
- ``build``: the only code that writes SK nodes (``apply_replacements``);
- ``fields``: the information field read off ONNX nodes;
- ``checks``, ``twin``: the structural half of verification and the dense twin's kernels;
- ``counts``, ``batchnorm``, ``analyze``: parameter counts, the BN after a conv, ``analyze``.
"""
