"""``onnx-sk export-torch IN.onnx OUT.pt``: a trainable PyTorch module of an ONNX model."""

from __future__ import annotations

import typer

from onnx_sk.cli.output import console
from onnx_sk.training.export import export_torch


def export_torch_cmd(
    model: str = typer.Argument(
        ..., help="ONNX model (e.g. the output of optimize --for-training)."
    ),
    output: str = typer.Argument(..., help="Where to torch.save the nn.Module (.pt)."),
) -> None:
    r"""Write a trainable torch.nn.Module (every weight an nn.Parameter). Needs PyTorch: pip
    install 'onnx-sk\[torch]'.

    Example: onnx-sk export-torch resnet18_sk.onnx resnet18_sk.pt (then
    torch.load("resnet18_sk.pt", weights_only=False) and fine-tune it).
    """
    path = export_torch(model, output)
    console.print(f"wrote {path} (load with torch.load(path, weights_only=False))")
