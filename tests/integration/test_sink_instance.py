"""The sink against a sandbox that behaves like an instance (issue 17): tables and fields only
as defined, values in the instance's forms, case-insensitive matching, asynchronous
insertMultiple keyed by column labels, session cookies, a URL length limit, OAuth grants as
instances have them. A real control plane and agent (the echo plugin makes the records) and
the real sandbox process; each test reads back what the sandbox holds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, Api, ControlPlane, scaled, wait_connected, wait_until
from bridgehead_testing.sandbox_server import SandboxServer

SECRET_ENV = "BH_TEST_SN_SECRET"  # noqa: S105 - the name of a variable, not a secret
# An instance-like sandbox: its defaults, plus what an admin sets up for the sink (the
# client-credentials grant enabled, the target tables and fields defined).
TABLES = """
[oauth]
client_credentials = true

[tables.u_assets.fields.u_key]
max_length = 255
[tables.u_assets.fields.u_seen]
type = "glide_date_time"
[tables.u_assets.fields.u_cost]
type = "decimal"
[tables.u_assets.fields.u_note]
max_length = 40
[tables.u_assets.fields.u_flag]
type = "boolean"

[tables.u_items.fields.u_id]
max_length = 40

[transforms.u_items_import]
target = "u_items"
coalesce = ["u_id"]
display_field = "u_id"
[transforms.u_items_import.fields]
u_id = "u_id"
"""
ASSETS_MAP = {"u_key": "key", "u_seen": "seen", "u_cost": "cost", "u_note": "note", "u_flag": "flag"}


def assets_sink(**keys: Any) -> dict[str, Any]:
    return {"servicenow": "sandbox", "table": "u_assets", "coalesce": ["u_key"], "map": ASSETS_MAP, **keys}


ITEMS_SINK = {"servicenow": "sandbox", "import_set": "u_items_import", "map": {"u_id": "n"}, "passthrough": False}


def instance_config(sandbox: SandboxServer, **keys: Any) -> str:
    table: dict[str, Any] = {
        "url": sandbox.url,
        "tables": ["u_assets", "u_items_import"],
        "client_id": "bridgehead",
        "client_secret_env": SECRET_ENV,
        "max_requests_per_s": 1000,
        **keys,
    }
    return "\n[servicenow.sandbox]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + "\n"


@pytest.fixture
def start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_factory: Callable[..., Agent]
) -> Iterator[Callable[..., tuple[SandboxServer, Api]]]:
    """``start(sandbox_extra, **instance_keys)``: a sandbox, a control plane and an agent."""
    monkeypatch.setenv(SECRET_ENV, "bridgehead")
    sandboxes: list[SandboxServer] = []
    controls: list[ControlPlane] = []

    def run(sandbox_config: str = TABLES, **keys: Any) -> tuple[SandboxServer, Api]:
        sandbox = SandboxServer(tmp_path / "sandbox", sandbox_config).start()
        sandboxes.append(sandbox)
        (tmp_path / "cp").mkdir()
        control = ControlPlane(tmp_path / "cp", heartbeat_s=1.0, extra_config=instance_config(sandbox, **keys))
        controls.append(control.start())
        agent = agent_factory(control)
        api = control.api()
        wait_connected(api, [agent.name])
        return sandbox, api

    yield run
    for control in controls:
        control.stop()
    for sandbox in sandboxes:
        sandbox.stop()


def deliver(api: Api, sink: dict[str, Any], params: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Submit an echo job with ``sink``; its sync view once the delivery has ended."""
    status, job = api.request("POST", "/api/v1/jobs", {"plugin": "echo", "params": params, "sink": sink})
    assert 201 == status, job
    assert "succeeded" == api.wait_done(job["id"], timeout=scaled(timeout))["state"]

    def ended() -> dict[str, Any] | None:
        sync: dict[str, Any] = api.job(job["id"])["sync"]
        return sync if sync["state"] in ("done", "failed") else None

    result: dict[str, Any] = wait_until(ended, scaled(timeout), f"delivery of job {job['id']}")
    return result


def counts(sync: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sync[k] for k in ("state", "inserted", "updated", "ignored", "skipped", "errors"))


def writes(sandbox: SandboxServer) -> dict[str, int]:
    """The sandbox's count of writes by endpoint (reads and its admin API left out)."""
    by_endpoint: dict[str, int] = sandbox.stats()["by_endpoint"]
    return {k: n for k, n in by_endpoint.items() if not k.startswith(("GET ", "POST oauth"))}


def asset(i: int, key_case: str, **extra: Any) -> dict[str, Any]:
    key = f"Asset-{i:04d}"
    return {
        "key": key.upper() if key_case == "upper" else key,
        "seen": "2024-03-01T10:00:00.250+02:00",  # stored as "2024-03-01 08:00:00"
        "cost": "12.50",  # stored as "12.5"
        "note": "n" * 60,  # cut at 40
        "flag": "yes",  # stored as "true"
        "color": "blue",  # passthrough u_color: no such field on u_assets
        **extra,
    }


# --- compare as the instance does -----------------------------------------------------------


def test_a_second_identical_run_writes_nothing(start: Callable[..., tuple[SandboxServer, Api]]) -> None:
    """Keys whose case changes, values the instance normalises, passthrough fields the target
    lacks: the second run finds every row and changes none."""
    sandbox, api = start()
    first = deliver(api, assets_sink(), {"records": [asset(i, "as is") for i in range(300)]})
    assert ("done", 300, 0, 0, 0, 0) == counts(first), first
    rows = sandbox.rows("u_assets", fields="u_key,u_seen,u_cost,u_note,u_flag")
    assert 300 == len(rows)
    assert {"u_seen": "2024-03-01 08:00:00", "u_cost": "12.5", "u_note": "n" * 40, "u_flag": "true"} == {
        k: rows[0][k] for k in ("u_seen", "u_cost", "u_note", "u_flag")
    }
    before = writes(sandbox)
    second = deliver(api, assets_sink(), {"records": [asset(i, "upper") for i in range(300)]})
    assert ("done", 0, 0, 300, 0, 0) == counts(second), second
    assert before == writes(sandbox), "the second run wrote"
    assert 300 == len(sandbox.rows("u_assets", fields="sys_id"))
    # A real change is still one: one record's cost moves.
    third = deliver(api, assets_sink(), {"records": [asset(7, "upper", cost="13")]})
    assert ("done", 0, 1, 0, 0, 0) == counts(third), third
    [row] = sandbox.rows("u_assets", query="u_key=ASSET-0007", fields="u_cost")
    assert "13" == row["u_cost"]


def test_a_missing_coalesce_field_fails_before_anything_is_sent(
    start: Callable[..., tuple[SandboxServer, Api]],
) -> None:
    sandbox, api = start()
    before = writes(sandbox)
    sink = assets_sink(coalesce=["u_directory_id"], map={**ASSETS_MAP, "u_directory_id": "key"})
    sync = deliver(api, sink, {"records": [asset(i, "as is") for i in range(10)]})
    assert ("failed", "invalid_target") == (sync["state"], sync["error"]["code"]), sync
    assert "u_assets" in sync["error"]["message"] and "u_directory_id" in sync["error"]["message"], sync
    assert before == writes(sandbox)
    assert [] == sandbox.rows("u_assets", fields="sys_id")


# --- keys are hostile ------------------------------------------------------------------------

HOSTILE_KEYS = ["evil^ORsys_idISNOTEMPTY", "evil2^^ORsys_idISNOTEMPTY", "evil3^NQu_keyISEMPTY"]


def test_a_key_cannot_rewrite_the_lookup_query(start: Callable[..., tuple[SandboxServer, Api]]) -> None:
    """Coalesce keys are record data: a ``^`` in one would add an OR term that matches every
    row, the lookup's row limit would then cut off the real match, and the row would be inserted
    twice (or another row changed). Read back: each key's row exists once, the others are
    untouched, and a key that starts with ``^`` is an error of its own, never sent."""
    sandbox, api = start()
    plain = [{"key": f"Asset-{i:04d}", "note": "kept"} for i in range(50)]
    hostile = [{"key": key, "note": "first"} for key in HOSTILE_KEYS]
    sink = assets_sink(map={"u_key": "key", "u_note": "note"}, passthrough=False)
    first = deliver(api, sink, {"records": plain})  # first, so that these rows come first
    assert ("done", 50, 0, 0, 0, 0) == counts(first), first
    second = deliver(api, sink, {"records": hostile})
    assert ("done", 3, 0, 0, 0, 0) == counts(second), second
    # Only the hostile keys, against a table of 53 rows: an OR term matching them all would
    # fill the lookup's page (two rows a key) with the rows made first.
    again = deliver(api, sink, {"records": [{**r, "note": "second"} for r in hostile]})
    assert ("done", 0, 3, 0, 0, 0) == counts(again), again
    rows = sandbox.rows("u_assets", fields="u_key,u_note")
    assert 53 == len(rows), sorted(r["u_key"] for r in rows)
    assert {key: "second" for key in HOSTILE_KEYS} == {r["u_key"]: r["u_note"] for r in rows if "evil" in r["u_key"]}
    assert {"kept"} == {r["u_note"] for r in rows if r["u_key"].startswith("Asset-")}
    before = writes(sandbox)
    refused = deliver(api, sink, {"records": [{"key": "^ORsys_idISNOTEMPTY", "note": "x"}]})
    assert ("done", 0, 0, 0, 0, 1) == counts(refused), refused
    assert before == writes(sandbox), "a key no query can carry was sent"


# --- URL budget -----------------------------------------------------------------------------


@pytest.mark.parametrize(("max_url_bytes", "instance_limit"), [(6000, 8192), (1024, 2048)])
def test_keys_of_255_characters_stay_under_the_url_budget(
    start: Callable[..., tuple[SandboxServer, Api]], max_url_bytes: int, instance_limit: int
) -> None:
    """255-character keys (2 bytes each in UTF-8, 6 percent-encoded): each lookup stays under
    the budget, a key longer than the budget alone is looked up by prefix; nothing refused."""
    config = TABLES + f"\n[limits]\nmax_url_bytes = {instance_limit}\n"
    sandbox, api = start(config, max_url_bytes=max_url_bytes)
    records = [{"key": f"{i:05d}" + "é" * 250, "note": "x"} for i in range(150)]
    sink = assets_sink(map={"u_key": "key", "u_note": "note"}, passthrough=False)
    first = deliver(api, sink, {"records": records})
    assert ("done", 150, 0, 0, 0, 0) == counts(first), first
    second = deliver(api, sink, {"records": records})
    assert ("done", 0, 0, 150, 0, 0) == counts(second), second
    assert 150 == len({row["u_key"] for row in sandbox.rows("u_assets", fields="u_key")})
    assert 0 == sandbox.stats()["by_status"].get("400", 0)


# --- insertMultiple as an instance runs it --------------------------------------------------


def test_ten_thousand_records_through_asynchronous_label_keyed_insert_multiple(
    start: Callable[..., tuple[SandboxServer, Api]],
) -> None:
    """The instance default: asynchronous, keyed by column labels; every row lands once and each
    row's outcome is read back from sys_import_set_row."""
    config = TABLES + '\n[tables.u_items_import]\nextends = "sys_import_set_row"\n'
    config += '[tables.u_items_import.fields.u_id]\nlabel = "Item number"\n'
    config += "\n[instance]\nasync_transform_delay_ms = 20\n"  # pending at first: the sink must poll
    sandbox, api = start(config, max_in_flight=8)
    sync = deliver(api, ITEMS_SINK, {"count": 10_000, "size": 1}, timeout=300)
    assert ("done", 10_000, 0, 0, 0, 0) == counts(sync), sync
    ids = [row["u_id"] for row in sandbox.rows("u_items", fields="u_id")]
    assert sorted(ids) == sorted(str(i) for i in range(10_000))
    assert sandbox.stats()["by_endpoint"]["POST import.insertMultiple"] == 50
    # Again: every row found by the transform's coalesce, none inserted twice.
    again = deliver(api, ITEMS_SINK, {"count": 10_000, "size": 1}, timeout=300)
    assert 0 == again["inserted"] and 10_000 == again["ignored"] + again["updated"], again
    assert 10_000 == len(sandbox.rows("u_items", fields="sys_id"))


def test_insert_multiple_keyed_by_names_where_the_instance_says_so(
    start: Callable[..., tuple[SandboxServer, Api]],
) -> None:
    """A sys_rest_insert_multiple record saying "Column name" (and synchronous): names are sent."""
    sandbox, api = start(TABLES + '\n[instance]\ninsert_multiple_columns = "label"\n')
    status, body = sandbox.call(
        "POST",
        "/api/now/table/sys_rest_insert_multiple",
        {"source_table": "u_items_import", "column_mapping": "name", "transformation": "synchronous"},
    )
    assert status in (200, 201), body
    sync = deliver(api, ITEMS_SINK, {"count": 500, "size": 1})
    assert ("done", 500, 0, 0, 0, 0) == counts(sync), sync
    assert 500 == len(sandbox.rows("u_items", fields="u_id"))


def test_parallel_requests_with_session_cookies_land_once(
    start: Callable[..., tuple[SandboxServer, Api]],
) -> None:
    """The instance sets session cookies and answers 202 beyond one waiting transaction per
    session: the sink sends none back, so its parallel requests never queue on one session."""
    config = TABLES + "\n[sessions]\nmax_waiters = 0\n\n[instance]\nasync_transform_delay_ms = 50\n"
    sandbox, api = start(config, max_in_flight=16, batch_size=50)
    sync = deliver(api, ITEMS_SINK, {"count": 3000, "size": 1})
    assert ("done", 3000, 0, 0, 0, 0) == counts(sync), sync
    assert 3000 == len({row["u_id"] for row in sandbox.rows("u_items", fields="u_id")})
    assert 0 == sandbox.stats()["by_status"].get("202", 0)


# --- OAuth ----------------------------------------------------------------------------------


@pytest.mark.parametrize("error_style", ["rfc6749", "servicenow"])
def test_a_disabled_client_credentials_grant_names_the_property(
    start: Callable[..., tuple[SandboxServer, Api]], error_style: str
) -> None:
    config = TABLES.replace("client_credentials = true", f'error_style = "{error_style}"')
    sandbox, api = start(config)
    sync = deliver(api, assets_sink(), {"records": [asset(1, "as is")]})
    assert ("failed", "auth_failed") == (sync["state"], sync["error"]["code"]), sync
    assert "glide.oauth.inbound.client.credential.grant_type.enabled" in sync["error"]["message"], sync
    assert [] == sandbox.rows("u_assets", fields="sys_id")


def test_the_password_grant(start: Callable[..., tuple[SandboxServer, Api]], tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("admin")
    config = TABLES.replace("client_credentials = true", "access_token_ttl_s = 2")
    sandbox, api = start(config, auth="oauth_password", username="admin", password_file=str(password))
    first = deliver(api, assets_sink(), {"records": [asset(i, "x") for i in range(5)]})
    assert ("done", 5) == (first["state"], first["inserted"]), first
    time.sleep(2.5)  # the access token's 2 s life runs out: the passing of time is the condition
    # The access token expired: renewed with the grant's refresh token, then used.
    sync = deliver(api, assets_sink(), {"records": [asset(i, "x") for i in range(10)]})
    assert ("done", 5, 5) == (sync["state"], sync["inserted"], sync["ignored"]), sync
    assert 10 == len(sandbox.rows("u_assets", fields="sys_id"))


def test_the_jwt_bearer_grant(start: Callable[..., tuple[SandboxServer, Api]], tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "jwt.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    config = TABLES.replace("client_credentials = true", "") + (
        '\n[oauth.clients.bridgehead]\nsecret = "bridgehead"\nuser = "admin"\n'
        f"jwt_certificate = {json.dumps(public.decode())}\n"
    )
    sandbox, api = start(
        config, auth="oauth_jwt", jwt_private_key_file=str(key_file), jwt_kid="k1", jwt_subject="admin"
    )
    sync = deliver(api, assets_sink(), {"records": [asset(i, "x") for i in range(5)]})
    assert ("done", 5) == (sync["state"], sync["inserted"]), sync
    assert 5 == len(sandbox.rows("u_assets", fields="sys_id"))
