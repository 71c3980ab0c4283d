"""The strict sandbox's schema, run as a real process: tables and fields exist only when defined
(built in, [tables.*] in its config, or sys_db_object / sys_dictionary records an admin posts),
unknown fields are dropped, values come back in the instance's forms, matching ignores case,
an unknown query field matches every row unless strict_query, and long URLs are refused.

Each check reads the sandbox's tables back over the Table API: what it stored, not what it
answered to the write."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.sandbox_server import SandboxServer

CONFIG = """
[tables.u_asset]
label = "Asset"
extends = "cmdb_ci"

[tables.u_asset.fields.u_cost]
type = "decimal"
max_length = 15

[tables.u_asset.fields.u_bought]
type = "glide_date"

[tables.u_asset.fields.u_code]
max_length = 8
label = "Asset code"
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("schema"), CONFIG) as server:
        yield server


def ok(sandbox: SandboxServer, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    got, answer = sandbox.call(method, path, body)
    assert status == got, (method, path, got, answer)
    return answer


def as_user(sandbox: SandboxServer, credentials: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A request as another user than the SandboxServer's admin."""
    headers = {
        "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
        "Accept": "application/json",
    }
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(sandbox.url + path, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def q(table: str, **params: str) -> str:
    return f"/api/now/table/{table}?" + urllib.parse.urlencode(params)


def test_only_defined_tables_exist(sandbox: SandboxServer) -> None:
    """Built-in and config tables answer; anything else is 400 Invalid table, on read and write."""
    for table in ("sys_user", "sys_user_group", "sys_user_grmember", "cmdb_ci_linux_server", "u_asset"):
        assert "result" in ok(sandbox, "GET", q(table, sysparm_limit="1"))
    status, body = sandbox.call("GET", "/api/now/table/u_never")
    assert (400, "Invalid table u_never") == (status, body["error"]["message"])
    status, body = sandbox.call("POST", "/api/now/table/u_never", {"name": "x"})
    assert (400, "Invalid table u_never") == (status, body["error"]["message"])
    assert [] == sandbox.rows("sys_db_object", "name=u_never")


def test_definitions_read_as_sys_db_object_and_sys_dictionary(sandbox: SandboxServer) -> None:
    """The schema is readable as an instance's: tables with their parent's sys_id, fields with
    type and length (sys_user.user_name is a string of 40, email 100)."""
    objects = {
        r["name"]: r for r in sandbox.rows("sys_db_object", "nameINsys_user,cmdb_ci_server,cmdb_ci_linux_server")
    }
    assert "User" == objects["sys_user"]["label"]
    assert "" == objects["sys_user"]["super_class"]
    assert objects["cmdb_ci_server"]["sys_id"] == objects["cmdb_ci_linux_server"]["super_class"]
    fields = {r["element"]: r for r in sandbox.rows("sys_dictionary", "name=sys_user")}
    assert ("string", "40", "User ID") == tuple(
        fields["user_name"][k] for k in ("internal_type", "max_length", "column_label")
    )
    assert ("email", "100") == (fields["email"]["internal_type"], fields["email"]["max_length"])
    assert "boolean" == fields["active"]["internal_type"]
    assert "glide_date_time" == fields["sys_created_on"]["internal_type"]
    custom = {r["element"]: r for r in sandbox.rows("sys_dictionary", "name=u_asset")}
    assert {"u_cost", "u_bought", "u_code"} == set(custom)
    assert ("decimal", "15", "Asset code") == (
        custom["u_cost"]["internal_type"],
        custom["u_cost"]["max_length"],
        custom["u_code"]["column_label"],
    )


def test_values_are_stored_in_the_instances_forms(sandbox: SandboxServer) -> None:
    """Unknown fields are dropped, every value is a string in its type's form, text is cut at
    the field's max length; the stored record (read back) says so."""
    body = {
        "user_name": "form.check",
        "email": "x" * 150,
        "active": True,
        "locked_out": 0,
        "last_login_time": "2024-05-01T10:00:00+02:00",
        "u_not_a_field": "dropped",
        "sys_created_by": "not writable",
    }
    created = ok(sandbox, "POST", "/api/now/table/sys_user", body, status=201)["result"]
    stored = ok(sandbox, "GET", f"/api/now/table/sys_user/{created['sys_id']}")["result"]
    assert created == stored
    assert "u_not_a_field" not in stored
    assert "x" * 100 == stored["email"]
    assert ("true", "false") == (stored["active"], stored["locked_out"])
    assert "2024-05-01 08:00:00" == stored["last_login_time"]
    assert "admin" == stored["sys_created_by"]
    assert all(isinstance(v, str) for v in stored.values())
    asset = {"name": "srv-1", "u_cost": "1234.500", "u_bought": "2024-02-03T23:59:00Z", "u_code": "ABCDEFGHIJ"}
    made = ok(sandbox, "POST", "/api/now/table/u_asset", asset, status=201)["result"]
    back = ok(sandbox, "GET", f"/api/now/table/u_asset/{made['sys_id']}")["result"]
    assert ("srv-1", "1234.5", "2024-02-03", "ABCDEFGH") == (
        back["name"],
        back["u_cost"],
        back["u_bought"],
        back["u_code"],
    )


def test_an_update_in_another_form_of_the_same_values_changes_nothing(sandbox: SandboxServer) -> None:
    """PATCHing values the instance normalises to what it holds is no change (mod count stays)."""
    made = ok(sandbox, "POST", "/api/now/table/sys_user", {"user_name": "same", "active": "true"}, status=201)["result"]
    path = f"/api/now/table/sys_user/{made['sys_id']}"
    ok(sandbox, "PATCH", path, {"active": True, "last_login_time": "", "u_unknown": "x"})
    assert "0" == ok(sandbox, "GET", path)["result"]["sys_mod_count"]
    ok(sandbox, "PATCH", path, {"active": "false"})
    assert ("false", "1") == tuple(ok(sandbox, "GET", path)["result"][k] for k in ("active", "sys_mod_count"))


def test_matching_ignores_case(sandbox: SandboxServer) -> None:
    """=, !=, IN, NOT IN and name=value filters match regardless of case, as an instance's do."""
    for name in ("Case.Alice", "case.bob"):
        ok(sandbox, "POST", "/api/now/table/sys_user", {"user_name": name}, status=201)

    def names(**params: str) -> list[str]:
        return sorted(r["user_name"] for r in ok(sandbox, "GET", q("sys_user", **params))["result"])

    assert ["Case.Alice"] == names(sysparm_query="user_name=CASE.ALICE")
    assert ["Case.Alice", "case.bob"] == names(sysparm_query="user_nameINcase.alice,CASE.BOB")
    assert ["case.bob"] == names(sysparm_query="user_nameSTARTSWITHcase.^user_name!=case.alice")
    assert ["case.bob"] == names(sysparm_query="user_nameSTARTSWITHcase.^user_nameNOT INCASE.ALICE")
    assert ["Case.Alice"] == names(user_name="case.alice")


def test_an_unknown_query_field_matches_every_row(sandbox: SandboxServer) -> None:
    """A term naming a field the table lacks is dropped: the rest of the query decides."""
    ok(sandbox, "POST", "/api/now/table/sys_user_group", {"name": "grp-unknown-field"}, status=201)
    every = ok(sandbox, "GET", q("sys_user_group"))["result"]
    assert every == ok(sandbox, "GET", q("sys_user_group", sysparm_query="u_directory_id=nobody"))["result"]
    assert every == ok(sandbox, "GET", q("sys_user_group", u_directory_id="nobody"))["result"]


def test_an_admin_defines_a_table_and_fields_through_the_table_api(tmp_path: Path) -> None:
    """POST sys_db_object then sys_dictionary makes a table with fields (types, lengths), which
    then behaves like a built-in one and survives a restart; bad definitions are refused."""
    users = '[users.admin]\npassword = "admin"\nroles = ["admin"]\n[users.sync]\npassword = "sync-pw"\n'
    with SandboxServer(tmp_path / "admin-defined", users) as sandbox:
        status, answer = as_user(sandbox, "sync:sync-pw", "POST", "/api/now/table/sys_db_object", {"name": "u_mine"})
        assert (403, "Operation Failed") == (status, answer["error"]["message"])
        assert 200 == as_user(sandbox, "sync:sync-pw", "GET", "/api/now/table/sys_db_object?sysparm_limit=1")[0]
        parent = sandbox.rows("sys_db_object", "name=sys_user_group")[0]["sys_id"]
        ok(
            sandbox,
            "POST",
            "/api/now/table/sys_db_object",
            {"name": "u_team", "label": "Team", "super_class": parent},
            201,
        )
        ok(sandbox, "POST", "/api/now/table/sys_db_object", {"name": "u_probe", "label": "Probe"}, 201)
        field = {"name": "u_probe", "element": "u_directory_id", "internal_type": "string", "max_length": "20"}
        ok(sandbox, "POST", "/api/now/table/sys_dictionary", field, status=201)
        ok(
            sandbox,
            "POST",
            "/api/now/table/sys_dictionary",
            {"name": "u_probe", "element": "u_seen", "internal_type": "glide_date_time"},
            201,
        )
        for bad in (
            ("sys_db_object", {"name": "u_probe"}),  # exists
            ("sys_db_object", {"name": "u_orphan", "super_class": "0" * 32}),  # no such parent
            ("sys_dictionary", {"name": "u_nowhere", "element": "u_x"}),  # no such table
            ("sys_dictionary", {"name": "u_probe", "element": "Bad Name"}),
        ):
            status, answer = sandbox.call("POST", f"/api/now/table/{bad[0]}", bad[1])
            assert 400 == status, (bad, answer)
        row = {"u_directory_id": "d" * 30, "u_seen": "2024-01-02 03:04:05", "u_other": "dropped"}
        ok(sandbox, "POST", "/api/now/table/u_probe", row, status=201)
        ok(sandbox, "POST", "/api/now/table/u_team", {"name": "Ops", "u_other": "dropped"}, status=201)
        sandbox.restart()
        assert {"u_directory_id", "u_seen", "sys_id"} <= set(sandbox.rows("u_probe")[0])
        [probe] = sandbox.rows("u_probe")
        assert ("d" * 20, "2024-01-02 03:04:05") == (probe["u_directory_id"], probe["u_seen"])
        assert "u_other" not in probe
        [team] = sandbox.rows("u_team")
        assert ("Ops", "u_other" in team) == (team["name"], False)
        assert "u_directory_id" in {r["element"] for r in sandbox.rows("sys_dictionary", "name=u_probe")}
        status, _ = sandbox.call("DELETE", f"/api/now/table/sys_db_object/{parent}")
        assert 403 == status  # built-in definitions are read-only
        # A reset with data forgets the admin's definitions and keeps the built-in ones.
        assert 200 == sandbox.call("POST", "/sandbox/reset", {"data": True})[0]
        assert 400 == sandbox.call("GET", "/api/now/table/u_probe")[0]
        assert ["sys_user_group"] == [r["name"] for r in sandbox.rows("sys_db_object", "name=sys_user_group")]


def test_strict_query_lenient_schema_and_case_sensitive_settings(tmp_path: Path) -> None:
    """strict_query: an unknown field matches nothing; lenient: any table and field on first
    write, values verbatim; case_sensitive: = compares exactly."""
    config = '[instance]\nstrict_query = true\nschema = "lenient"\ncase_sensitive = true\n'
    with SandboxServer(tmp_path / "settings", config) as sandbox:
        made = ok(sandbox, "POST", "/api/now/table/u_free", {"u_when": "2024-05-01T10:00:00Z", "Name": "Mixed"}, 201)
        assert ("2024-05-01T10:00:00Z", "Mixed") == (made["result"]["u_when"], made["result"]["Name"])
        assert [] == ok(sandbox, "GET", q("u_free", sysparm_query="u_nope=1"))["result"]
        assert [] == ok(sandbox, "GET", q("u_free", sysparm_query="Name=mixed"))["result"]
        assert 1 == len(ok(sandbox, "GET", q("u_free", sysparm_query="Name=Mixed"))["result"])
        status, _ = sandbox.call("GET", "/api/now/table/sys_db_object")
        assert 400 == status  # the lenient sandbox has no schema tables until one is written


def test_a_url_longer_than_the_limit_is_refused(tmp_path: Path) -> None:
    """A request target over limits.max_url_bytes answers 400 and reads nothing; at the limit it runs."""
    with SandboxServer(tmp_path / "url", "[limits]\nmax_url_bytes = 1024\n") as sandbox:
        base = "/api/now/table/sys_user?sysparm_query="
        at_limit = base + "user_nameINa" + "," * (1024 - len(base) - len("user_nameINa"))
        assert 1024 == len(at_limit)
        assert 200 == sandbox.call("GET", at_limit)[0]
        status, body = sandbox.call("GET", at_limit + ",")
        assert 400 == status
        assert "max_url_bytes" in body["error"]["detail"]
