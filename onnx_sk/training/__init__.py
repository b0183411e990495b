"""PyTorch: the only package that imports torch (the ``torch`` extra).

- ``module``: OnnxModule, an ONNX graph as a trainable ``torch.nn.Module``;
- ``registry``: the op-rule registry and the value conventions the rules share;
- ``ops_*``: the rules, by kind (conv, elementwise, index, layout, recurrent, reduce, resize);
- ``weights``: ``weights_into``, trained parameters and buffers back into the ONNX model;
- ``export``: ``to_torch`` and ``export_torch`` (``onnx-sk export-torch``), torch imported lazily.
"""
