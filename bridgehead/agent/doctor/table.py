"""How the rows are printed: a table with a line of advice under each failure, or JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from bridgehead.agent.doctor.findings import Result, Row

_SHOWN = {Result.OK: "ok", Result.WARN: "warn", Result.FAIL: "FAIL", Result.SKIP: "skip"}


def render_table(rows: Sequence[Row]) -> str:
    width = max([len("CHECK"), *(len(row.check) for row in rows)])
    indent = " " * (width + 2 + 6 + 2)
    lines = [f"{'CHECK':<{width}}  {'RESULT':<6}  DETAIL"]
    for row in rows:
        lines.append(f"{row.check:<{width}}  {_SHOWN[row.result]:<6}  {row.detail}".rstrip())
        if row.advice and row.result in (Result.FAIL, Result.WARN):
            lines.append(f"{indent}fix: {row.advice}")
    lines.append("")
    lines.append(summary(rows))
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> str:
    counts = Counter(row.result for row in rows)
    parts = [
        f"{counts[Result.FAIL]} failed",
        f"{counts[Result.WARN]} warning{'s' if counts[Result.WARN] != 1 else ''}",
        f"{counts[Result.OK]} ok",
    ]
    if counts[Result.SKIP]:
        parts.append(f"{counts[Result.SKIP]} skipped")
    return ", ".join(parts)


def render_json(rows: Sequence[Row]) -> str:
    return json.dumps(
        [
            {"check": row.check, "result": row.result.value, "detail": row.detail, "advice": row.advice or None}
            for row in rows
        ],
        indent=2,
    )


def exit_code(rows: Sequence[Row]) -> int:
    """0 when nothing failed (warnings allowed), 1 otherwise."""
    return 1 if any(row.result is Result.FAIL for row in rows) else 0
