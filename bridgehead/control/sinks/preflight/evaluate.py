"""Rows from what is needed and what was seen (pure), each with what to fix."""

from __future__ import annotations

import time
from typing import Any

from bridgehead.control.sinks.config import ServiceNowInstance
from bridgehead.control.sinks.instance_schema import (
    FieldInfo,
    TableSchema,
    plain,
)
from bridgehead.control.sinks.preflight.needs import FieldNeed, Needs
from bridgehead.control.sinks.preflight.observe import Seen
from bridgehead.control.sinks.preflight.rows import (
    CC_PROPERTY,
    GUID_LENGTH,
    ID_FIELD_LENGTH,
    INSERT_MULTIPLE,
    MAX_TABLES,
    Check,
)


def _auth_fix(instance: ServiceNowInstance, name: str) -> str:
    where = f"[servicenow.{name}]"
    grant = instance.auth
    if grant == "oauth_client_credentials":
        return (
            f"if the instance says the grant is not allowed: set the system property {CC_PROPERTY} = true "
            "and give the OAuth application registry entry an OAuth Application User; otherwise check "
            f"client_id and the client secret of {where}"
        )
    if grant == "oauth_refresh_token":
        return (
            "the refresh token expired (its lifespan is the OAuth application registry entry's Refresh Token "
            f"Lifespan, 100 days by default) or was revoked: authorise again and set refresh_token_env/_file of "
            f"{where}; or client_id / client secret are wrong"
        )
    if grant == "oauth_password":
        return (
            f"check username, password, client_id and the client secret of {where}; the user must be active "
            "and not locked out"
        )
    if grant == "basic":
        return (
            f"check username and the password of {where}; the user must be active, not locked out, and "
            "have a password (an integration user's 'Web service access only' is fine)"
        )
    if "jwt" in grant:
        return (
            "check the OAuth application registry entry's JWT verifier map (its certificate must be the one "
            f"that signs our JWT, and its key id the one we send), the JWT bearer grant, and client_id of {where}"
        )
    return f"check the credentials of {where} and that the instance allows the {grant} grant"


def evaluate(name: str, instance: ServiceNowInstance, needs: Needs, seen: Seen) -> list[Check]:
    checks: list[Check] = []
    if needs.refused is not None:
        checks.append(
            Check(
                "allowlist", f"[servicenow.{name}]", "fail", needs.refused, "add the table to tables, or fix the sink"
            )
        )
    if seen.auth_error:
        fix = (
            f"the token endpoint {instance.base_url}/oauth_token.do did not answer: check the url and network"
            if seen.auth_retryable
            else _auth_fix(instance, name)
        )
        checks.append(Check("auth", seen.grant, "fail", seen.auth_error, fix))
        return checks + _timeout(seen)
    obtained = "basic auth (no token)" if seen.grant == "basic" else "a token obtained from /oauth_token.do"
    checks.append(Check("auth", seen.grant, "ok", obtained))
    if seen.api_status == 401:
        detail = f"the Table API refused the credentials: HTTP 401 {seen.api_message}".strip()
        checks.append(Check("api", "GET /api/now/table", "fail", detail, _auth_fix(instance, name)))
        return checks + _timeout(seen)
    if seen.api_status:
        checks.append(_rate_limit(instance, seen))
    checks += _dictionary(seen)
    for table in needs.tables:
        if table in seen.reads or table in seen.schemas:
            checks += _table(table, needs, seen)
    for staging, found in seen.insert_multiple.items():
        checks.append(_insert_multiple(staging, found, seen.schemas.get(staging)))
    if needs.unchecked:
        checks.append(
            Check(
                "table",
                f"{needs.unchecked} more",
                "warn",
                f"only the first {MAX_TABLES} tables of tables are checked in one run",
                "check the others with --sink naming them",
            )
        )
    return checks + _timeout(seen)


def _timeout(seen: Seen) -> list[Check]:
    if not seen.timed_out:
        return []
    return [Check("deadline", "preflight", "fail", seen.timed_out, "check the instance's health, then run again")]


def _rate_limit(instance: ServiceNowInstance, seen: Seen) -> Check:
    headers = seen.headers
    limit = _number(headers.get("x-ratelimit-limit"))
    target = "GET /api/now/table"
    if seen.api_status == 429:
        wait = headers.get("retry-after", "?")
        return Check(
            "rate limit",
            target,
            "warn",
            f"rate limited right now (429, Retry-After {wait} s); deliveries wait it out",
            "raise the REST API rate limit rule, or run deliveries later",
        )
    if limit is None:
        return Check("rate limit", target, "ok", "no rate limit rule applies (no X-RateLimit-* headers)")
    per_s = limit / 3600.0  # an instance's rules count requests per hour (SERVICENOW_API.md §5)
    rule = headers.get("x-ratelimit-rule", "?")
    detail = f"rule {rule}: {limit:g} requests per hour ({per_s:.2f}/s)"
    remaining = _number(headers.get("x-ratelimit-remaining"))
    if remaining is not None:
        detail += f", {remaining:g} left"
    reset = _number(headers.get("x-ratelimit-reset"))
    if reset is not None:
        detail += f", reset in {max(0, int(reset - time.time()))} s"
    if remaining is not None and remaining <= 0:
        return Check("rate limit", target, "warn", detail + "; none left", "wait for the reset, or raise the rule")
    if per_s < instance.max_requests_per_s:
        return Check(
            "rate limit",
            target,
            "warn",
            f"{detail}, under max_requests_per_s = {instance.max_requests_per_s:g}: deliveries will be paced by 429s",
            f"set max_requests_per_s = {max(per_s, 0.01):.2f}, or raise the rule (REST API rate limits)",
        )
    return Check("rate limit", target, "ok", detail)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _dictionary(seen: Seen) -> list[Check]:
    if seen.dictionary:
        return [
            Check(
                "dictionary",
                "sys_db_object, sys_dictionary",
                "fail",
                f"cannot read the schema: {seen.dictionary}",
                "give the integration user read access to sys_db_object and sys_dictionary (the "
                "personalize_dictionary role, or read ACLs on both): the sink checks fields and compares values by it",
            )
        ]
    return [Check("dictionary", "sys_db_object, sys_dictionary", "ok", "readable")]


def _table(table: str, needs: Needs, seen: Seen) -> list[Check]:
    schema = seen.schemas.get(table)
    status, message = seen.reads.get(table, (0, ""))
    fields = [n for n in needs.fields if n.table.lower() == table.lower()]
    invalid = status == 400 and "invalid table" in message.lower()  # how an instance names a table it lacks
    if (table in seen.schemas and schema is None) or (invalid and schema is None):
        row = Check(
            "table",
            table,
            "fail",
            "no such table on the instance" + (f" (HTTP 400: {message})" if invalid else ""),
            "create it (an import set: a staging table extending sys_import_set_row), or correct the name in "
            "tables / the sink",
        )
        return [row] + [_missing(n, "its table does not exist") for n in fields if n.required]
    if status not in (200, 404):
        fix = (
            f"give the integration user a role that reads {table} (a read ACL on the table), "
            "or correct the name in tables / the sink"
        )
        what = f"HTTP {status}: {message}" if status else "not read"
        checks = [Check("table", table, "fail", f"not readable by this user ({what})", fix)]
    else:
        shape = ""
        if schema is not None:
            above = " <- ".join(schema.chain[1:])
            shape = f", {len(schema.fields)} fields" + (f", extends {above}" if above else "")
        rows = "has rows" if seen.samples.get(table) else "no rows yet"
        checks = [Check("table", table, "ok", f"exists, readable ({rows}){shape}")]
    if schema is not None:
        checks += [_field(n, schema.field(n.field), seen.samples.get(table)) for n in fields]
    return checks


def _missing(need: FieldNeed, why: str) -> Check:
    return Check("field", f"{need.table}.{need.field}", "fail" if need.required else "warn", why, "")


def _field(need: FieldNeed, info: FieldInfo | None, sample: dict[str, Any] | None) -> Check:
    target = f"{need.table}.{need.field}"
    kind = "coalesce" if need.coalesce else "field"
    if info is None:
        if need.coalesce:
            detail = f"missing ({need.why}): the sink refuses to deliver, and a query on it would match every row"
        else:
            detail = f"missing ({need.why}): the instance would drop its values"
        length = max(need.min_length, ID_FIELD_LENGTH if need.coalesce else 100)
        fix = f"add a string field {need.field} ({length} characters) to {need.table}, or correct the sink"
        if not need.required:
            detail += "; only needed if a sink uses it"
        return Check(kind, target, "fail" if need.required else "warn", detail, fix)
    size = f"({info.max_length})" if info.max_length else ""
    detail = f"{info.type}{size}, label {info.label!r} ({need.why})"
    if sample is None:
        detail += "; readable: not checked (no rows)"
    elif need.field.lower() not in {k.lower() for k in sample}:
        return Check(
            kind,
            target,
            "fail" if need.required else "warn",
            detail + "; hidden from this user (a field ACL: absent from a row read back)",
            f"give the integration user read access to {target} (field ACL)",
        )
    else:
        detail += "; readable"
    if info.read_only:
        return Check(
            kind,
            target,
            "fail" if need.required else "warn",
            detail + "; read-only in sys_dictionary",
            f"clear Read only on the dictionary entry of {target}, or map another field",
        )
    detail += "; writable: not read-only (write ACLs not probed)"
    if need.min_length and 0 < info.max_length < need.min_length:
        short = info.max_length < GUID_LENGTH
        return Check(
            kind,
            target,
            "fail" if short and need.required else "warn",
            detail + f"; max length {info.max_length} < {need.min_length}: longer keys are cut and stop matching",
            f"set Max length of {target} to {need.min_length}",
        )
    return Check(kind, target, "ok", detail)


def _insert_multiple(staging: str, found: list[dict[str, Any]] | str, schema: TableSchema | None) -> Check:
    target = f"{INSERT_MULTIPLE} {staging}"
    if isinstance(found, str):
        return Check(
            "insertMultiple",
            target,
            "warn",
            f"cannot read {INSERT_MULTIPLE} ({found}): the sink cannot learn the column mode",
            f"give the integration user read access to {INSERT_MULTIPLE}",
        )
    labels = ""
    if schema is not None:
        own = [f for f in schema.fields.values() if f.name.startswith("u_")]
        labels = ", ".join(f"{f.label} = {f.name}" for f in own[:10])
        duplicated = _duplicate_labels(own)
        if duplicated:
            return Check(
                "insertMultiple",
                target,
                "fail",
                f"columns share a label ({', '.join(duplicated)}): records keyed by label are ambiguous",
                f"give each column of {staging} its own label, or set Column mapping to Column name",
            )
    if not found:
        detail = "no record: transforms asynchronously and expects column labels (the default)"
        return Check("insertMultiple", target, "ok", detail + (f"; columns {labels}" if labels else ""))
    mode, columns = describe_insert_multiple(found[0])
    return Check("insertMultiple", target, "ok", f"{mode}, columns by {columns}")


def describe_insert_multiple(record: dict[str, Any]) -> tuple[str, str]:
    """("synchronous"/"asynchronous", "name"/"label") from a sys_rest_insert_multiple record,
    read by value (the field names differ between releases)."""
    mode, columns = "asynchronous", "label"
    for key, value in record.items():
        text = plain(value).lower()
        key = key.lower()
        if "sync" in key or "transform" in key:
            if text in ("true", "synchronous", "sync"):
                mode = "synchronous"
        if "column" in key or "mapping" in key:
            if "name" in text:
                columns = "name"
    return mode, columns


def _duplicate_labels(fields: list[FieldInfo]) -> list[str]:
    seen: dict[str, int] = {}
    for info in fields:
        seen[info.label.casefold()] = seen.get(info.label.casefold(), 0) + 1
    return sorted(label for label, count in seen.items() if count > 1)


# --- running it ----------------------------------------------------------------------------
