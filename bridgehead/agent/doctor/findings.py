"""What a check found: a result, a detail line and, for a failure, one line of advice.

A ``Finding`` is what a check returns; the runner adds the check's name to make a ``Row``,
which is what the table and ``--json`` print. Every text passes through the secret redactor
when the row is made, so no check has to remember to mask what a driver said.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from bridgehead.core.redact import REDACTOR

_SPACE = re.compile(r"\s+")


class Result(enum.StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but look at it soon; does not change the exit code
    FAIL = "fail"  # the agent cannot work as configured: the exit code is 1
    SKIP = "skip"  # not checked, because a check it depends on failed (or it does not apply)


@dataclass(frozen=True)
class Finding:
    result: Result
    detail: str
    advice: str = ""


def ok(detail: str) -> Finding:
    return Finding(Result.OK, detail)


def warn(detail: str, advice: str = "") -> Finding:
    return Finding(Result.WARN, detail, advice)


def fail(detail: str, advice: str) -> Finding:
    return Finding(Result.FAIL, detail, advice)


def skip(detail: str) -> Finding:
    return Finding(Result.SKIP, detail)


def credential_ref(name: str | None) -> str:
    """How advice names a profile's credential table."""
    return f"[credentials.{name}]" if name else "the profile's credential (it names none)"


@dataclass(frozen=True)
class Row:
    check: str
    result: Result
    detail: str
    advice: str = ""

    @classmethod
    def of(cls, check: str, finding: Finding) -> Row:
        return cls(check, finding.result, _clean(finding.detail), _clean(finding.advice))


def _clean(text: str) -> str:
    """One line, secrets masked: drivers' messages span lines and may quote what they were sent."""
    return REDACTOR.redact(_SPACE.sub(" ", text).strip())
