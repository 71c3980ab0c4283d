"""The preflight of a ServiceNow instance: does it let a sink deliver, and if not, what to fix.

    bridgehead-control servicenow check NAME [--sink JSON]      (the CLI renders a table)
    POST /api/v1/servicenow/{name}/check {"sink": {...}}        (the API returns the rows)

It connects as the sink does (an ``InstanceClient``, the same authenticator and grant) and
reads, never writes:

    auth          the grant of [servicenow.NAME]: a token obtained, or the instance's refusal
                  with the property or setting to change
    api           one Table API read with that token (sys_db_object)
    rate limit    the X-RateLimit-* headers of that read, against max_requests_per_s
    dictionary    whether sys_db_object / sys_dictionary can be read (the sink checks fields
                  and compares values by the types the dictionary gives)
    table         each target table: exists, readable by this user
    field         each field the sink, a preset or a coalesce needs: exists, type, max length,
                  readable (a sample row), writable (sys_dictionary read_only; write ACLs are
                  not probed: no Table API write is free of side effects)
    insertMultiple  an import set's sys_rest_insert_multiple record: transform mode, labels
                  or names

Three steps, so that the CLI and the API print and return the same rows: ``needs_of`` (what
the configuration and the sink need, pure), ``observe`` (the requests), ``evaluate`` (rows
from both, pure). docs/servicenow-setup.md says, per row, what an instance admin sets up.
"""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec

from bridgehead.control.sinks.auth import AuthFailed, RefreshTokens
from bridgehead.control.sinks.client import InstanceClient, InstanceUnavailable
from bridgehead.control.sinks.config import ServiceNowInstance
from bridgehead.control.sinks.preflight.evaluate import describe_insert_multiple, evaluate
from bridgehead.control.sinks.preflight.needs import FieldNeed, Needs, needs_of
from bridgehead.control.sinks.preflight.observe import Seen, observe
from bridgehead.control.sinks.preflight.rows import DEFAULT_DEADLINE_S, Check, CheckRequest, Report, report
from bridgehead.control.sinks.spec import SinkSpec

__all__ = [
    "Check",
    "CheckRequest",
    "FieldNeed",
    "Needs",
    "Report",
    "Seen",
    "describe_insert_multiple",
    "evaluate",
    "needs_of",
    "observe",
    "render",
    "report",
    "run_preflight",
]


async def run_preflight(
    name: str,
    instance: ServiceNowInstance,
    spec: SinkSpec | None,
    tokens: RefreshTokens,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> Report:
    """The preflight of ``[servicenow.NAME]`` (and ``spec``), within ``deadline_s``: a client of
    its own, with at most 2 retries a request, so a down instance is reported, not waited out."""
    bounded = msgspec.structs.replace(
        instance, max_retries=min(instance.max_retries, 2), backoff_max_s=min(instance.backoff_max_s, 2.0)
    )
    needs = needs_of(name, bounded, spec)
    client = InstanceClient(name, bounded, tokens)
    seen = Seen(grant=instance.auth)
    try:
        async with asyncio.timeout(deadline_s):
            await observe(client, needs, seen)
    except TimeoutError:
        seen.timed_out = f"the checks did not finish within {deadline_s:g} s"
    except InstanceUnavailable as exc:
        seen.timed_out = str(exc)
    except AuthFailed as exc:  # a read refused twice with a fresh token
        seen.api_status, seen.api_message = 401, str(exc)
    except (aiohttp.ClientError, OSError) as exc:
        seen.auth_error = f"cannot reach {instance.base_url}: {exc or type(exc).__name__}"
        seen.auth_retryable = True
    finally:
        await client.close()
    return report(evaluate(name, instance, needs, seen))


def render(result: Report) -> str:
    """The rows as a text table; a row that is not ok has its fix on the line below."""
    rows = [("STATUS", "CHECK", "TARGET", "DETAIL")] + [
        (c.status.upper(), c.check, c.target, c.detail) for c in result.checks
    ]
    widths = [min(40, max(len(r[i]) for r in rows)) for i in range(3)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) for i in range(3)]
        lines.append("  ".join([*cells, row[3]]).rstrip())
        check = result.checks[index - 1] if index else None
        if check is not None and check.status != "ok" and check.fix:
            lines.append(" " * (sum(widths) + 6) + "fix: " + check.fix)
    failed = sum(c.status == "fail" for c in result.checks)
    warned = sum(c.status == "warn" for c in result.checks)
    summary = ["ok"] if result.ok else [f"{failed} failed"]
    if warned:
        summary.append(f"{warned} warning" + ("s" if warned > 1 else ""))
    lines += ["", ", ".join(summary)]
    return "\n".join(lines) + "\n"
