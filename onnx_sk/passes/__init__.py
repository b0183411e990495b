"""Graph passes, one per file, run in order by :mod:`onnx_sk.optimize`."""
