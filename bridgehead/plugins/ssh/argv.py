"""Commands as argv: splitting a job's command, matching it against ``allowed_commands``, and
the remote command line that runs exactly that argv (pure functions, no I/O).

The pattern language (docs/plugins/ssh.md, "Allowed commands"): a pattern is split like a
POSIX shell line (``shlex``) into one glob per argument (``fnmatch``, case-sensitive: ``*``,
``?``, ``[...]``); it matches an argv with as many arguments, each matching its glob. A final
lone ``*`` matches any further arguments, zero or more. So ``"df -h *"`` allows ``df -h`` and
``df -h /var /tmp``, and ``"systemctl status *.service"`` exactly one unit argument.

The remote command line quotes every argument (``shlex.quote``): the remote shell reads it
back into the same argv, and no character of an argument is ever a shell metacharacter.
"""

from __future__ import annotations

import fnmatch
import functools
import shlex
from collections.abc import Sequence

# A pattern's final argument that stands for any further arguments (zero or more).
ANY_FURTHER = "*"


def to_argv(command: str | Sequence[str]) -> list[str]:
    """A job's command as argv: a list as given, a string split as a POSIX shell would
    (quotes and backslashes, no expansion). ``ValueError`` says why it cannot be one."""
    if isinstance(command, str):
        try:
            argv = shlex.split(command, comments=False, posix=True)
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise ValueError(f"the command cannot be split into arguments: {exc}") from None
    else:
        argv = list(command)
    if not argv:
        raise ValueError("the command has no program to run (no arguments)")
    if any("\x00" in argument for argument in argv):
        raise ValueError("an argument has a NUL character")
    return argv


@functools.lru_cache(maxsize=4096)
def parse_pattern(pattern: str) -> tuple[str, ...]:
    """One glob per argument; ``ValueError`` for a pattern that names no program."""
    try:
        globs = tuple(shlex.split(pattern, comments=False, posix=True))
    except ValueError as exc:
        raise ValueError(f"allowed_commands pattern {pattern!r} cannot be split: {exc}") from None
    if not globs:
        raise ValueError(f"allowed_commands pattern {pattern!r} is empty")
    if "\x00" in pattern:
        raise ValueError(f"allowed_commands pattern {pattern!r} has a NUL character")
    return globs


def matches(argv: Sequence[str], pattern: str) -> bool:
    """Whether ``argv`` is one that ``pattern`` allows (the module's pattern language)."""
    globs = parse_pattern(pattern)
    if len(globs) > 1 and globs[-1] == ANY_FURTHER:
        fixed = globs[:-1]
        if len(argv) < len(fixed):
            return False
    else:
        fixed = globs
        if len(argv) != len(fixed):
            return False
    return all(fnmatch.fnmatchcase(argument, glob) for argument, glob in zip(argv, fixed, strict=False))


def allowed(argv: Sequence[str], patterns: Sequence[str]) -> bool:
    return any(matches(argv, pattern) for pattern in patterns)


def command_line(argv: Sequence[str]) -> str:
    """The line a POSIX shell reads back into exactly ``argv``: every argument quoted."""
    return " ".join(shlex.quote(argument) for argument in argv)
