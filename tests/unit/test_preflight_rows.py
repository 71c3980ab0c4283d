"""The preflight's rows from what an instance showed (``evaluate``, no I/O): the cases a test
instance cannot easily show (rate-limit rules, read-only and ACL-hidden fields, a short key
field, an unreadable dictionary) and what the configuration and a sink need (``needs_of``)."""

from __future__ import annotations

import time

from bridgehead.control.sinks.config import ServiceNowInstance
from bridgehead.control.sinks.instance_schema import FieldInfo, TableSchema
from bridgehead.control.sinks.preflight import (
    Check,
    Needs,
    Seen,
    describe_insert_multiple,
    evaluate,
    needs_of,
    render,
    report,
)
from bridgehead.control.sinks.spec import parse_sink

INSTANCE = ServiceNowInstance(
    url="https://corp.service-now.com",
    tables=["u_servers", "sys_user"],
    auth="oauth_client_credentials",
    client_id="bridgehead",
    client_secret_env="UNUSED_SECRET_VARIABLE",  # noqa: S106 - a variable name, never read here
    max_requests_per_s=20,
)
SINK = parse_sink({"servicenow": "corp", "table": "u_servers", "coalesce": ["u_name"], "map": {"u_ip": "ip"}})


def schema(table: str, *fields: FieldInfo) -> TableSchema:
    return TableSchema(table, {f.name: f for f in fields}, (table,))


def seen_ok(**schemas: TableSchema | None) -> Seen:
    seen = Seen(grant="oauth_client_credentials", api_status=200)
    for table, found in schemas.items():
        seen.schemas[table] = found
        seen.reads[table] = (200, "")
        seen.samples[table] = None
    return seen


def rows(checks: list[Check], kind: str) -> dict[str, Check]:
    return {c.target: c for c in checks if c.check == kind}


def test_a_sink_needs_its_coalesce_and_mapped_fields_and_the_allowed_presets_theirs() -> None:
    needs = needs_of("corp", INSTANCE, SINK)
    assert ("u_servers", "sys_user") == needs.tables
    fields = {(n.table, n.field): n for n in needs.fields}
    assert fields[("u_servers", "u_name")].coalesce and fields[("u_servers", "u_name")].required
    assert not fields[("u_servers", "u_ip")].coalesce
    # ldap_users is allowed by tables: its fields are checked, a missing one only warns.
    directory = fields[("sys_user", "u_directory_id")]
    assert directory.coalesce and not directory.required and 40 == directory.min_length
    # ldap_groups is not (sys_user_group is not in tables): nothing of it is checked.
    assert not any(n.table == "sys_user_group" for n in needs.fields)
    assert needs.refused is None


def test_a_sink_on_a_table_not_in_tables_is_a_failing_row() -> None:
    spec = parse_sink({"servicenow": "corp", "preset": "ldap_groups"})
    needs = needs_of("corp", INSTANCE, spec)
    assert needs.refused is not None and "sys_user_group" in needs.refused
    checks = evaluate("corp", INSTANCE, needs, seen_ok())
    assert "fail" == rows(checks, "allowlist")["[servicenow.corp]"].status


def test_missing_read_only_hidden_and_short_fields() -> None:
    needs = needs_of("corp", INSTANCE, SINK)
    seen = seen_ok(
        u_servers=schema("u_servers", FieldInfo("u_ip", "IP", "string", 40, read_only=True)),
        sys_user=schema("sys_user", FieldInfo("u_directory_id", "Directory ID", "string", 32)),
    )
    seen.samples["u_servers"] = {"sys_id": "1"}  # a row read back without the fields asked for
    checks = evaluate("corp", INSTANCE, needs, seen)
    coalesce = rows(checks, "coalesce")
    assert "fail" == coalesce["u_servers.u_name"].status
    assert "u_name" in coalesce["u_servers.u_name"].fix
    # Hidden by a field ACL is reported before read-only (the first thing to fix).
    assert "fail" == rows(checks, "field")["u_servers.u_ip"].status
    assert "field ACL" in rows(checks, "field")["u_servers.u_ip"].detail
    short = coalesce["sys_user.u_directory_id"]
    assert "warn" == short.status and "32 < 40" in short.detail, short  # not required: no sink uses it
    assert not report(checks).ok


def test_a_read_only_field_fails_with_the_dictionary_fix() -> None:
    needs = Needs(tables=("u_servers",), import_sets=(), fields=needs_of("corp", INSTANCE, SINK).fields[:2])
    seen = seen_ok(
        u_servers=schema(
            "u_servers",
            FieldInfo("u_name", "Name", "string", 100),
            FieldInfo("u_ip", "IP", "string", 40, read_only=True),
        )
    )
    checks = evaluate("corp", INSTANCE, needs, seen)
    ip = rows(checks, "field")["u_servers.u_ip"]
    assert "fail" == ip.status and "read-only" in ip.detail and "Read only" in ip.fix
    assert "ok" == rows(checks, "coalesce")["u_servers.u_name"].status


def test_a_missing_table_fails_and_so_do_its_required_fields() -> None:
    needs = needs_of("corp", INSTANCE, SINK)
    checks = evaluate("corp", INSTANCE, needs, seen_ok(u_servers=None, sys_user=schema("sys_user")))
    assert "fail" == rows(checks, "table")["u_servers"].status
    assert "fail" == rows(checks, "field")["u_servers.u_name"].status


def test_rate_limit_headers_against_max_requests_per_s() -> None:
    needs = Needs(tables=(), import_sets=(), fields=())
    seen = seen_ok()
    seen.headers = {"x-ratelimit-limit": "3600", "x-ratelimit-reset": str(time.time() + 600), "x-ratelimit-rule": "r1"}
    limit = rows(evaluate("corp", INSTANCE, needs, seen), "rate limit")["GET /api/now/table"]
    assert "warn" == limit.status and "1.00/s" in limit.detail and "max_requests_per_s = 1.00" in limit.fix
    seen.headers["x-ratelimit-limit"] = "360000"
    assert "ok" == rows(evaluate("corp", INSTANCE, needs, seen), "rate limit")["GET /api/now/table"].status
    seen.api_status = 429
    assert "warn" == rows(evaluate("corp", INSTANCE, needs, seen), "rate limit")["GET /api/now/table"].status


def test_an_unreadable_dictionary_and_a_refused_grant() -> None:
    needs = Needs(tables=(), import_sets=(), fields=())
    seen = seen_ok()
    seen.dictionary = "reading sys_db_object answered HTTP 403"
    dictionary = rows(evaluate("corp", INSTANCE, needs, seen), "dictionary")["sys_db_object, sys_dictionary"]
    assert "fail" == dictionary.status and "personalize_dictionary" in dictionary.fix
    refused = Seen(grant="oauth_client_credentials", auth_error="the instance refused the client credentials")
    checks = evaluate("corp", INSTANCE, needs, refused)
    assert ["auth"] == [c.check for c in checks]
    assert "glide.oauth.inbound.client.credential.grant_type.enabled" in checks[0].fix
    assert "1 failed" in render(report(checks))


def test_the_insert_multiple_record_is_read_by_value() -> None:
    assert ("asynchronous", "label") == describe_insert_multiple({"source_table": "u_imp"})
    record = {"source_table": "u_imp", "transformation": "Synchronous", "column_mapping": "Column name"}
    assert ("synchronous", "name") == describe_insert_multiple(record)
    seen = seen_ok()
    seen.insert_multiple["u_imp"] = "HTTP 403: ACL"
    needs = Needs(tables=(), import_sets=("u_imp",), fields=())
    row = rows(evaluate("corp", INSTANCE, needs, seen), "insertMultiple")["sys_rest_insert_multiple u_imp"]
    assert "warn" == row.status
