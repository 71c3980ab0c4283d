"""The rows a preflight answers with, and the limits it works within."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Status = Literal["ok", "warn", "fail"]

MAX_TABLES = 50  # tables of [servicenow.NAME].tables checked in one run (a sink's always are)
ID_FIELD_LENGTH = 40  # u_directory_id: an objectGUID or entryUUID is 36 characters
GUID_LENGTH = 36
DEFAULT_DEADLINE_S = 120.0
IMPORT_ROW = "sys_import_set_row"  # every import set (staging) table extends it
INSERT_MULTIPLE = "sys_rest_insert_multiple"
CC_PROPERTY = "glide.oauth.inbound.client.credential.grant_type.enabled"


class Check(msgspec.Struct, frozen=True):
    """One row of the preflight: ``fix`` says what to change when ``status`` is not ok."""

    check: str
    target: str
    status: Status
    detail: str
    fix: str = ""


class Report(msgspec.Struct, frozen=True):
    ok: bool
    checks: list[Check]


class CheckRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/servicenow/{name}/check``: a job's sink to check as well (optional)."""

    sink: dict[str, Any] | None = None


def report(checks: list[Check]) -> Report:
    """Warnings do not fail a preflight; one failing row does."""
    return Report(ok=all(c.status != "fail" for c in checks), checks=checks)


# --- what is needed ------------------------------------------------------------------------
