"""The Typer application: the root command (``--version``) and every command, registered here
explicitly (one module per command in this package, each calling one library function)."""

from __future__ import annotations

import typer

from onnx_sk import __version__
from onnx_sk.cli import (
    analyze,
    bench,
    compare,
    distill,
    efficiency,
    export_torch,
    optimize,
    profile_lut,
    search,
)

app = typer.Typer(
    name="onnx-sk",
    help="Turn dense CNNs in ONNX into sparse-kernel (SK) networks.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"onnx-sk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Turn dense CNNs in ONNX into sparse-kernel (SK) networks."""


app.command("analyze")(analyze.analyze_cmd)
app.command("bench")(bench.bench_cmd)
app.command("compare")(compare.compare_cmd)
app.command("distill")(distill.distill_cmd)
app.command("efficiency")(efficiency.efficiency_cmd)
app.command("export-torch")(export_torch.export_torch_cmd)
app.command("optimize")(optimize.optimize_cmd())
app.command("profile-lut")(profile_lut.profile_lut_cmd)
app.command("search")(search.search_cmd)
