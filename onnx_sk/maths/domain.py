"""DomainError: an argument outside the domain of the papers' formulas.

The maths modules import nothing of onnx-sk outside ``maths/``, so they cannot raise
:class:`onnx_sk.errors.UserError`. An argument a user chose (a channel count, a budget, a design
length) that no formula accepts raises :class:`DomainError` instead, with a message that names
the argument; the command line reports it like every other bad input (one line, exit code 2).
"""

from __future__ import annotations


class DomainError(ValueError):
    """An argument no formula accepts (a user's input, reported in one line)."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
