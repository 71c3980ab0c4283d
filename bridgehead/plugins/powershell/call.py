"""Structured PowerShell calls: ``{"command": "Get-Service", "parameters": {"Name": "spooler"}}``
encoded so that no value is ever read as PowerShell code, and matched against a profile's
``allowed_commands`` (pure functions, no I/O).

Where the call must travel as script text (the ssh and local transports), it becomes::

    $bhParameters = @{}
    $bhParameters['Name'] = [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String('c3Bvb2xlcg=='))
    Get-Service @bhParameters

The command and parameter names are checked against strict patterns (letters, digits and
``-``), strings travel as base64 (PowerShell takes the curly quotes U+2018/U+2019 as quotes
too, so doubling ``'`` alone would not be enough), numbers and booleans as literals, lists as
``@(...)`` of those; the call splats the table. Over PSRP the call is pypsrp's
``add_cmdlet``/``add_parameter``: no text at all.

The pattern language of ``allowed_commands`` (docs/plugins/powershell.md): a command name
glob, then the parameter names it may take, each as ``-Name`` (globs allowed; PowerShell's
case-insensitive matching), or a final ``*`` for any parameters. ``"Get-Service -Name"``
allows Get-Service with -Name or with no parameter, and nothing else.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import math
import re
from collections.abc import Mapping, Sequence

COMMAND_NAME = r"^[A-Za-z][A-Za-z0-9-]{0,127}$"
PARAMETER_NAME = r"^[A-Za-z][A-Za-z0-9]{0,127}$"
_COMMAND = re.compile(COMMAND_NAME)
_PARAMETER = re.compile(PARAMETER_NAME)
_GLOB = re.compile(r"^[A-Za-z0-9*?\[\]!-]+$")
TABLE = "$bhParameters"

Scalar = str | int | float | bool
Value = Scalar | list[Scalar]


def check_call(command: str, parameters: Mapping[str, Value]) -> None:
    """``ValueError`` unless every name has the strict form and every value can be passed."""
    if not _COMMAND.match(command):
        raise ValueError(f"command {command!r}: a PowerShell command name (letters, digits, '-')")
    for name, value in parameters.items():
        if not _PARAMETER.match(name):
            raise ValueError(f"parameter {name!r}: a PowerShell parameter name (letters and digits)")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, list):
                raise ValueError(f"parameter {name!r}: a list of strings, numbers or booleans, not of lists")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"parameter {name!r}: {item} is not a finite number")
            if isinstance(item, str) and "\x00" in item:
                raise ValueError(f"parameter {name!r} has a NUL character")


def literal(value: Value) -> str:
    """A PowerShell expression whose value is ``value``, with no character of it as code."""
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, int):
        return str(value)  # digits and a sign
    if isinstance(value, float):
        return f"[double]'{value!r}'"  # digits, '.', 'e', signs; the cast uses the invariant culture
    if isinstance(value, str):
        encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
        return f"[System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String('{encoded}'))"
    return "@(" + ", ".join(literal(item) for item in value) + ")"


def call_script(command: str, parameters: Mapping[str, Value]) -> str:
    """The call as PowerShell script text (the module's docstring shows one)."""
    check_call(command, parameters)
    lines = [f"{TABLE} = @{{}}"]
    lines += [f"{TABLE}['{name}'] = {literal(value)}" for name, value in parameters.items()]
    lines.append(f"{command} @{TABLE[1:]}")
    return "\n".join(lines)


@functools.lru_cache(maxsize=4096)
def parse_pattern(pattern: str) -> tuple[str, tuple[str, ...], bool]:
    """(command glob, parameter-name globs, any parameters); ``ValueError`` names the pattern."""
    words = pattern.split()
    if not words or words[0].startswith("-") or not _GLOB.match(words[0]):
        raise ValueError(f"allowed_commands pattern {pattern!r}: start with a command name, e.g. 'Get-Service -Name'")
    rest = words[1:]
    any_parameters = bool(rest) and rest[-1] == "*"
    if any_parameters:
        rest = rest[:-1]
    for word in rest:
        if not word.startswith("-") or not _GLOB.match(word[1:]):
            raise ValueError(
                f"allowed_commands pattern {pattern!r}: {word!r} is not a parameter name like -Name "
                "(a final * allows any parameters)"
            )
    return words[0].casefold(), tuple(w[1:].casefold() for w in rest), any_parameters


def call_matches(command: str, names: Sequence[str], pattern: str) -> bool:
    """Whether the call of ``command`` with parameters ``names`` is one ``pattern`` allows
    (case-insensitive, as PowerShell resolves names)."""
    command_glob, parameter_globs, any_parameters = parse_pattern(pattern)
    if not fnmatch.fnmatchcase(command.casefold(), command_glob):
        return False
    if any_parameters:
        return True
    return all(any(fnmatch.fnmatchcase(n.casefold(), g) for g in parameter_globs) for n in names)


def call_allowed(command: str, names: Sequence[str], patterns: Sequence[str]) -> bool:
    return any(call_matches(command, names, pattern) for pattern in patterns)
