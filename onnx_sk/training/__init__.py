"""PyTorch: the only package that imports torch (the ``torch`` extra).

- ``module``: OnnxModule, an ONNX graph as a trainable ``torch.nn.Module``;
- ``export``: ``to_torch`` and ``export_torch`` (``onnx-sk export-torch``), torch imported lazily.
"""
