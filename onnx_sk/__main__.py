"""``python -m onnx_sk`` runs the ``onnx-sk`` command line."""

from onnx_sk.cli import run

run()
