"""The ``onnx-sk`` command line. One module per command; each calls one library function.

Only this package imports typer. ``main()`` turns a :class:`~onnx_sk.errors.UserError` (bad
input) into a one-line ``error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from onnx_sk import __version__
from onnx_sk.errors import UserError

app = typer.Typer(
    name="onnx-sk",
    help="Turn dense CNNs in ONNX into sparse-kernel (SK) networks.",
    no_args_is_help=True,
    add_completion=False,
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


# Each command module registers itself on ``app`` when imported.
from onnx_sk.cli import commands  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for bad input, with a one-line message)."""
    try:
        app(args=argv, standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except TyperException as exc:  # usage errors: unknown option, bad value, missing argument
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            typer.echo(f"error: {exc}", err=True)
        return int(getattr(exc, "exit_code", 2))
    return 0


def run() -> None:
    sys.exit(main())
