"""The ``onnx-sk`` command line. One module per command; each calls one library function.

Only this package imports typer. ``main()`` turns bad input (:data:`onnx_sk.errors.BAD_INPUT`)
into a one-line ``error: ...`` on stderr and the error's exit code (2; 1 when verification
failed), never a traceback.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import typer
from typer.exceptions import TyperException

from onnx_sk.cli.app import app
from onnx_sk.errors import BAD_INPUT

#: the signals (SIGINT, SIGTERM) that stopped this run: typer turns a KeyboardInterrupt into a
#: return value, so the handlers record what happened here
_stopped_by: list[int] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stopped_by.append(signum)
    raise KeyboardInterrupt


def _handle_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so the same clean-up runs
    (temporary files removed, nothing half-written); a signal the parent ignores stays ignored."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_signal)


def _stopped(default: int = signal.SIGINT) -> int:
    signum = _stopped_by[0] if _stopped_by else default
    typer.echo("terminated" if signum == signal.SIGTERM else "interrupted", err=True)
    return 128 + signum


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for bad input, with a one-line message;
    130 after Ctrl-C and 143 after SIGTERM, with nothing half-written)."""
    _stopped_by.clear()
    _handle_signals()
    try:
        code = app(args=argv, standalone_mode=False)
    except BAD_INPUT as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        if _stopped_by:
            return _stopped()
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        return _stopped()
    except TyperException as exc:  # usage errors: unknown option, bad value, missing argument
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            typer.echo(f"error: {exc}", err=True)
        return int(getattr(exc, "exit_code", 2))
    if _stopped_by:  # typer caught the KeyboardInterrupt and returned 130
        return _stopped()
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())
