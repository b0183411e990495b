"""Errors that are the user's input, not onnx-sk's bugs: the CLI prints them in one line, exit 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a clear one-line message, exit code 2, no traceback."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
