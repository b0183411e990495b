"""Typer parameters generated from the option declarations of :mod:`onnx_sk.options`.

Each declared option becomes one ``typer.Option`` with its flag, help text and help panel (its
group). Repeatable options (tuples) become lists; a bool that defaults to True and is declared
with a ``--no-…`` flag becomes that flag (``--no-verify`` sets ``verify=False``).
``options_from_cli`` maps the command's keyword arguments back to ``OptimizeOptions``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any

import typer

from onnx_sk.options import (
    GROUPS,
    OptimizeOptions,
    choices_of,
    flag_of,
    option_fields,
    panel_of,
)


def _inverted(f: dataclasses.Field) -> bool:
    return f.default is True and flag_of(f).startswith("--no-")


def _cli_name(f: dataclasses.Field) -> str:
    return flag_of(f).removeprefix("--").replace("-", "_") if _inverted(f) else f.name


def _cli_type(hint: Any) -> Any:
    """The annotation Typer understands for a field's type (``X | None`` → ``Optional[X]``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        # list[args[0]], built at run time (a variable is no type expression for a type checker)
        listed = types.GenericAlias(list, args[0])
        return typing.Optional[listed]  # noqa: UP045  (Typer reads typing.Optional)
    if type(None) in typing.get_args(hint):
        return typing.Optional[args[0]]  # noqa: UP045
    return hint


def choice_help(choices: tuple[str, ...]) -> dict[str, Any]:
    """The Typer Option keywords that show ``choices`` in the help (``[a|b|c]``) and complete
    them in the shell; parsing stays ``str``, so a bad value gets the owner's one-line error."""

    def complete(incomplete: str) -> list[str]:
        return [c for c in choices if c.startswith(incomplete)]

    return {"metavar": "[" + "|".join(choices) + "]", "autocompletion": complete}


def option_parameters() -> list[inspect.Parameter]:
    """One keyword-only parameter per declared option, with its Typer Option as the default."""
    hints: dict[str | None, dict[str, Any]] = {None: typing.get_type_hints(OptimizeOptions)}
    hints.update({g: typing.get_type_hints(cls) for g, cls in GROUPS.items()})
    params = []
    for group, f in option_fields():
        inverted = _inverted(f)
        default = False if inverted else (None if isinstance(f.default, tuple) else f.default)
        choices = choices_of(f)
        info = typer.Option(
            default, flag_of(f), help=f.metadata["help"], rich_help_panel=panel_of(group),
            **(choice_help(choices) if choices else {}),
        )  # fmt: skip
        annotation = bool if inverted else _cli_type(hints[group][f.name])
        params.append(
            inspect.Parameter(
                _cli_name(f), inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation
            )
        )
    return params


def options_from_cli(values: dict[str, Any]) -> OptimizeOptions:
    """``OptimizeOptions`` from the keyword arguments Typer passes (CLI names, lists, flags)."""
    flat = {}
    for _, f in option_fields():
        value = values[_cli_name(f)]
        flat[f.name] = (not value) if _inverted(f) else value
    return OptimizeOptions.from_flat(**flat)
