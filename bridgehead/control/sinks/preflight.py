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
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import msgspec

from bridgehead.control.sinks.allowlist import refusal, written_tables
from bridgehead.control.sinks.auth import AuthFailed, RefreshTokens, TokenUnavailable
from bridgehead.control.sinks.client import InstanceClient, InstanceUnavailable
from bridgehead.control.sinks.config import ServiceNowInstance
from bridgehead.control.sinks.instance_schema import (
    FieldInfo,
    SchemaUnreadable,
    TableSchema,
    plain,
    read_schema,
)
from bridgehead.control.sinks.presets import ID_FIELD, MEMBERS_TABLE, PRESETS
from bridgehead.control.sinks.spec import SinkSpec

Status = Literal["ok", "warn", "fail"]

MAX_TABLES = 50  # tables of [servicenow.NAME].tables checked in one run (a sink's always are)
ID_FIELD_LENGTH = 40  # u_directory_id: an objectGUID or entryUUID is 36 characters
_GUID_LENGTH = 36
DEFAULT_DEADLINE_S = 120.0
_IMPORT_ROW = "sys_import_set_row"  # every import set (staging) table extends it
_INSERT_MULTIPLE = "sys_rest_insert_multiple"
_CC_PROPERTY = "glide.oauth.inbound.client.credential.grant_type.enabled"


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


@dataclass(frozen=True)
class FieldNeed:
    table: str
    field: str
    why: str  # "coalesce", "map <- key", "preset ldap_users", ...
    coalesce: bool = False
    required: bool = True  # missing: fail (else warn: a preset the configuration allows, unused here)
    min_length: int = 0


@dataclass(frozen=True)
class Needs:
    tables: tuple[str, ...]  # each checked: exists, readable
    import_sets: tuple[str, ...]  # of those, the ones a sink sends insertMultiple to
    fields: tuple[FieldNeed, ...]
    unchecked: int = 0  # configured tables past MAX_TABLES
    refused: str | None = None  # the sink is not allowed on this instance (allowlist)


def _preset_needs(preset_name: str, required: bool) -> list[FieldNeed]:
    preset = PRESETS[preset_name]
    why = f"preset {preset_name}"
    needs = [FieldNeed(preset.table, ID_FIELD, why, True, required, ID_FIELD_LENGTH)]
    needs += [FieldNeed(preset.table, target, why, required=required) for target, _keys in preset.fields]
    needs += [FieldNeed(preset.table, name, why, required=required) for name in ("source", "active")]
    if preset.members:
        needs += [FieldNeed(MEMBERS_TABLE, name, why, required=required) for name in ("group", "user")]
        needs.append(FieldNeed("sys_user", "source", f"{why} (members by source)", required=required))
    return needs


def needs_of(name: str, instance: ServiceNowInstance, spec: SinkSpec | None) -> Needs:
    """What the configured tables, the presets they allow and the sink (if any) need."""
    tables: list[str] = []
    import_sets: list[str] = []
    fields: list[FieldNeed] = []

    def add(table: str) -> None:
        if table.lower() not in (t.lower() for t in tables):
            tables.append(table)

    refused = None
    if spec is not None:
        refused = refusal(name, instance, spec)
        for kind, table in written_tables(spec):
            add(table)
            if kind == "import set":
                import_sets.append(table)
        if spec.preset is not None:
            fields += _preset_needs(spec.preset, required=True)
        elif spec.table is not None:
            fields += [FieldNeed(spec.table, f, "coalesce", coalesce=True) for f in spec.coalesce]
            fields += [FieldNeed(spec.table, t, f"map <- {k}") for t, k in spec.map.items() if t not in spec.coalesce]
        elif spec.import_set is not None:
            fields += [FieldNeed(spec.import_set, t, f"map <- {k}") for t, k in spec.map.items()]
    allowed = {t.lower() for t in instance.tables}
    for preset_name, preset in PRESETS.items():
        if spec is not None and spec.preset == preset_name:
            continue
        own = {preset.table} | ({MEMBERS_TABLE} if preset.members else set())
        if own <= allowed:  # the configuration lets this preset deliver: say what it would need
            fields += [n for n in _preset_needs(preset_name, required=False) if n not in fields]
    for table in instance.tables:
        add(table)
    for need in fields:
        add(need.table)
    budget = MAX_TABLES + (len(written_tables(spec)) if spec is not None else 0)
    return Needs(
        tables=tuple(tables[:budget]),
        import_sets=tuple(import_sets),
        fields=tuple(_unique(fields)),
        unchecked=max(0, len(tables) - budget),
        refused=refused,
    )


def _unique(needs: list[FieldNeed]) -> list[FieldNeed]:
    """One need per table and field: a required or coalesce one wins over a mere warning."""
    kept: dict[tuple[str, str], FieldNeed] = {}
    for need in needs:
        key = (need.table.lower(), need.field.lower())
        old = kept.get(key)
        if old is None or (need.required and not old.required) or (need.coalesce and not old.coalesce):
            kept[key] = need
    return list(kept.values())


# --- what the instance shows ---------------------------------------------------------------


@dataclass
class Seen:
    """The answers ``observe`` collected; ``evaluate`` makes rows of them without I/O."""

    grant: str
    auth_error: str = ""  # "" = a token obtained (or basic auth); else the instance's refusal
    auth_retryable: bool = False  # the token endpoint was down or unreachable, not refusing
    api_status: int = 0  # the probe read's HTTP status (0: not sent)
    api_message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    dictionary: str = ""  # "" = readable; else why not
    schemas: dict[str, TableSchema | None] = field(default_factory=dict)
    reads: dict[str, tuple[int, str]] = field(default_factory=dict)  # table -> (status, message)
    samples: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # one row, needed fields
    insert_multiple: dict[str, list[dict[str, Any]] | str] = field(default_factory=dict)  # rows, or why not
    timed_out: str = ""


async def _probe(client: InstanceClient, path: str, params: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    """One GET with the sink's session and Authorization header, headers kept (the client's
    ``request`` keeps only status and body; a preflight wants the rate-limit headers)."""
    session = client.session()
    header = await client.auth.header(session)
    async with session.get(
        client.instance.base_url + path, params=params, headers={"Authorization": header}
    ) as response:
        raw = await response.read()
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-ratelimit")}
        if "retry-after" in response.headers:
            headers["retry-after"] = response.headers["retry-after"]
        message = ""
        if response.status >= 300:
            try:
                body = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                body = None
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                message = ": ".join(str(error.get(k) or "") for k in ("message", "detail") if error.get(k))
            message = message or raw[:200].decode("utf-8", "replace")
        return response.status, message, headers


async def observe(client: InstanceClient, needs: Needs, seen: Seen) -> None:
    """Every read the rows need, into ``seen`` (what was read before a failure is kept),
    through the sink's own client and its rate limit."""
    try:
        await client.auth.header(client.session())
    except AuthFailed as exc:
        seen.auth_error = str(exc)
        return
    except TokenUnavailable as exc:
        seen.auth_error, seen.auth_retryable = str(exc), True
        return
    seen.api_status, seen.api_message, seen.headers = await _probe(
        client,
        "/api/now/table/sys_db_object",
        {"sysparm_query": "name=sys_db_object", "sysparm_fields": "name", "sysparm_limit": "1"},
    )
    if seen.api_status == 401:
        return
    for table in needs.tables:
        try:
            seen.schemas[table] = await read_schema(client, table)
        except SchemaUnreadable as exc:
            seen.dictionary = str(exc)
            break
    if not seen.dictionary and seen.schemas and all(s is None for s in seen.schemas.values()):
        # An instance always describes sys_db_object itself: no row for it means no dictionary
        # to read at all (a stand-in that makes tables on first write), not that tables are missing.
        try:
            if await read_schema(client, "sys_db_object") is None:
                seen.dictionary = "the instance describes no tables (no sys_db_object row for sys_db_object)"
        except SchemaUnreadable as exc:
            seen.dictionary = str(exc)
    for table in needs.tables:
        wanted = sorted({n.field for n in needs.fields if n.table.lower() == table.lower()})
        params = {"sysparm_limit": "1", "sysparm_exclude_reference_link": "true"}
        if wanted:
            params["sysparm_fields"] = ",".join(["sys_id", *wanted])
        answer = await client.request("GET", f"/api/now/table/{table}", params=params)
        rows = answer.body.get("result") if isinstance(answer.body, dict) else None
        seen.reads[table] = (answer.status, "" if answer.status == 200 else answer.error_message())
        if answer.status == 200 and isinstance(rows, list):
            seen.samples[table] = rows[0] if rows and isinstance(rows[0], dict) else None
    for staging in _import_sets(needs, seen):
        answer = await client.request(
            "GET",
            f"/api/now/table/{_INSERT_MULTIPLE}",
            params={"sysparm_query": f"source_table={staging}", "sysparm_limit": "10"},
        )
        rows = answer.body.get("result") if isinstance(answer.body, dict) else None
        if answer.status == 200 and isinstance(rows, list):
            seen.insert_multiple[staging] = [r for r in rows if isinstance(r, dict)]
        elif answer.status == 404:
            seen.insert_multiple[staging] = []
        else:
            seen.insert_multiple[staging] = f"HTTP {answer.status}: {answer.error_message()}"


def _import_sets(needs: Needs, seen: Seen) -> list[str]:
    """The sink's import sets, and configured tables the dictionary shows are staging tables."""
    found = list(needs.import_sets)
    for table, schema in seen.schemas.items():
        if schema is not None and _IMPORT_ROW in schema.chain[1:] and table not in found:
            found.append(table)
    return found


# --- rows ----------------------------------------------------------------------------------


def _auth_fix(instance: ServiceNowInstance, name: str) -> str:
    where = f"[servicenow.{name}]"
    grant = instance.auth
    if grant == "oauth_client_credentials":
        return (
            f"if the instance says the grant is not allowed: set the system property {_CC_PROPERTY} = true "
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
        short = info.max_length < _GUID_LENGTH
        return Check(
            kind,
            target,
            "fail" if short and need.required else "warn",
            detail + f"; max length {info.max_length} < {need.min_length}: longer keys are cut and stop matching",
            f"set Max length of {target} to {need.min_length}",
        )
    return Check(kind, target, "ok", detail)


def _insert_multiple(staging: str, found: list[dict[str, Any]] | str, schema: TableSchema | None) -> Check:
    target = f"{_INSERT_MULTIPLE} {staging}"
    if isinstance(found, str):
        return Check(
            "insertMultiple",
            target,
            "warn",
            f"cannot read {_INSERT_MULTIPLE} ({found}): the sink cannot learn the column mode",
            f"give the integration user read access to {_INSERT_MULTIPLE}",
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
