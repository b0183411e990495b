"""Errors that are the user's input, not onnx-sk's bugs: the CLI prints them in one line.

- :class:`UserError`: a bad model, file or option (exit code 2);
- :class:`VerificationError`: an optimized model failed a check, so nothing was written (exit 1);
- :class:`~onnx_sk.maths.domain.DomainError`: an argument outside the papers' formulas (exit 2;
  raised by the maths modules, which import nothing else of onnx-sk).

``BAD_INPUT`` is what the command line catches. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from onnx_sk.maths.domain import DomainError


class UserError(Exception):
    """Bad input: a clear one-line message, exit code 2, no traceback."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class VerificationError(UserError):
    """The optimized model failed a check: onnx-sk refuses to write it."""

    exit_code = 1


#: the exceptions the command line reports in one line (``error: ...``) with their exit_code
BAD_INPUT = (UserError, DomainError)

__all__ = ["BAD_INPUT", "DomainError", "UserError", "VerificationError"]
