"""The sandbox's Import Set API as an instance has it: insertMultiple is asynchronous and keyed by
column labels by default, per-row outcomes live in sys_import_set_row, a sys_rest_insert_multiple
record switches a staging table to column names or to a synchronous transform, and the
transaction quota cancels a request that runs too long.

The sandbox runs as a real process (SandboxServer); every check reads its tables back through
the Table API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import scaled, wait_until
from bridgehead_testing.sandbox_server import SandboxServer

STAGING = "u_imp_person"
CONFIG = f"""
[instance]
# The background transform waits this long before it starts, so the test can see the import
# set "loaded" and its rows "pending" first.
async_transform_delay_ms = 1500

[transforms.{STAGING}]
name = "People"
target = "sys_user"
coalesce = ["user_name"]

[transforms.{STAGING}.fields]
user_name = "u_login"
email = "u_email_address"
first_name = "u_first_name"
active = "u_active"
last_login_time = "u_last_login"
u_directory_id = "u_login"  # sys_user has no such field: it goes nowhere
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "sandbox", CONFIG) as server:
        yield server


def insert_multiple(sandbox: SandboxServer, records: list[dict[str, str]], status: int = 201) -> Any:
    got, body = sandbox.call("POST", f"/api/now/import/{STAGING}/insertMultiple", {"records": records})
    assert got == status, body
    return body


def import_set(sandbox: SandboxServer, sys_id: str) -> dict[str, Any]:
    status, body = sandbox.call("GET", f"/api/now/table/sys_import_set/{sys_id}")
    assert status == 200, body
    record: dict[str, Any] = body["result"]
    return record


def processed(sandbox: SandboxServer, sys_id: str) -> dict[str, Any]:
    """Poll the import set as a client must, until it is processed (bounded)."""
    record: dict[str, Any] = wait_until(
        lambda: (r := import_set(sandbox, sys_id))["state"] == "processed" and r,
        timeout=30,
        what=f"import set {sys_id} processed",
        interval=0.1,
    )
    return record


def row_states(sandbox: SandboxServer, set_sys_id: str) -> list[dict[str, Any]]:
    rows = sandbox.rows("sys_import_set_row", f"sys_import_set={set_sys_id}")
    return sorted(rows, key=lambda r: int(r["sys_import_row"]))


def users(sandbox: SandboxServer, user_name: str) -> list[dict[str, Any]]:
    return sandbox.rows("sys_user", f"user_name={user_name}")


def test_insert_multiple_answers_ids_only_and_transforms_afterwards(sandbox: SandboxServer) -> None:
    """The documented async shape; the import set is "loaded" with "pending" rows when the
    client gets its answer, and "processed" with one outcome per row, in request order, later."""
    people = [
        {"Login": "ann", "Email address": "ann@example.com", "First name": "Ann"},
        {"login": "bob", "EMAIL ADDRESS": "bob@example.com", "First name": "Bob", "Nickname": "Bobby"},
        {"Email address": "nobody@example.com"},  # no coalesce value: skipped
    ]
    body = insert_multiple(sandbox, people)
    assert set(body) == {"import_set_id", "multi_import_set_id"}
    set_id = body["import_set_id"]

    loaded = import_set(sandbox, set_id)
    assert (loaded["state"], loaded["table_name"], loaded["mode"]) == ("loaded", STAGING, "asynchronous")
    assert [r["sys_import_state"] for r in row_states(sandbox, set_id)] == ["pending"] * 3
    assert users(sandbox, "ann") == []  # not transformed yet: the client has to poll

    processed(sandbox, set_id)
    rows = row_states(sandbox, set_id)
    assert [r["sys_import_row"] for r in rows] == ["0", "1", "2"]
    assert [r["sys_import_state"] for r in rows] == ["inserted", "inserted", "skipped"]
    assert all(r["sys_import_set"] == set_id for r in rows)
    assert {r["sys_class_name"] for r in rows} == {STAGING}
    ann, bob = users(sandbox, "ann"), users(sandbox, "bob")
    assert [u["email"] for u in ann + bob] == ["ann@example.com", "bob@example.com"]
    assert [rows[0]["sys_target_sys_id"], rows[1]["sys_target_sys_id"]] == [ann[0]["sys_id"], bob[0]["sys_id"]]
    assert rows[0]["sys_target_table"] == "sys_user"
    assert rows[0]["sys_transform_map"] == "People"
    assert rows[2]["sys_target_sys_id"] == ""

    # The staging rows hold the columns the labels named, and nothing of the unknown key.
    staged = sandbox.rows(STAGING, f"sys_import_set={set_id}")
    bob_row = next(r for r in staged if r.get("u_login") == "bob")
    assert bob_row["u_email_address"] == "bob@example.com"
    assert not any("nick" in key.lower() for key in bob_row)

    status, multi = sandbox.call("GET", f"/api/now/table/sys_multi_import_set/{body['multi_import_set_id']}")
    assert status == 200, multi


def test_a_second_import_updates_and_ignores(sandbox: SandboxServer) -> None:
    first = insert_multiple(sandbox, [{"Login": "cy", "Email address": "cy@example.com"}])
    processed(sandbox, first["import_set_id"])
    again = insert_multiple(
        sandbox,
        [{"Login": "cy", "Email address": "cy@example.org"}, {"Login": "cy", "Email address": "cy@example.org"}],
    )
    processed(sandbox, again["import_set_id"])
    assert [r["sys_import_state"] for r in row_states(sandbox, again["import_set_id"])] == ["updated", "ignored"]
    assert [u["email"] for u in users(sandbox, "cy")] == ["cy@example.org"]


def test_values_compare_in_the_targets_stored_form(sandbox: SandboxServer) -> None:
    """A boolean, a date written another way, a key in another case and a field the target lacks:
    the same rows imported twice are ignored the second time, as on an instance."""
    row = {"Login": "gus", "Active": "TRUE", "Last login": "2024-03-04T05:06:07Z", "Email address": "g@example.com"}
    first = insert_multiple(sandbox, [row])
    processed(sandbox, first["import_set_id"])
    (gus,) = users(sandbox, "gus")
    assert (gus["active"], gus["last_login_time"]) == ("true", "2024-03-04 05:06:07")
    assert "u_directory_id" not in gus
    again = insert_multiple(sandbox, [row, {**row, "Active": "1", "Last login": "2024-03-04 05:06:07"}])
    processed(sandbox, again["import_set_id"])
    assert [r["sys_import_state"] for r in row_states(sandbox, again["import_set_id"])] == ["ignored", "ignored"]
    other_case = insert_multiple(sandbox, [{**row, "Login": "GUS"}])
    processed(sandbox, other_case["import_set_id"])
    (state,) = row_states(sandbox, other_case["import_set_id"])
    assert (state["sys_import_state"], state["sys_target_sys_id"]) == ("updated", gus["sys_id"])
    assert [u["sys_id"] for u in users(sandbox, "gus")] == [gus["sys_id"]]


def test_column_names_go_nowhere_unless_the_staging_table_is_set_up_for_them(sandbox: SandboxServer) -> None:
    """By default the keys are labels: a body keyed by column names stages nothing, so the row
    has no coalesce value. A sys_rest_insert_multiple record saying "column name" changes that,
    and then labels go nowhere."""
    by_name = insert_multiple(sandbox, [{"u_login": "dee", "u_email_address": "dee@example.com"}])
    processed(sandbox, by_name["import_set_id"])
    assert [r["sys_import_state"] for r in row_states(sandbox, by_name["import_set_id"])] == ["skipped"]
    assert users(sandbox, "dee") == []

    status, setup = sandbox.call(
        "POST", "/api/now/table/sys_rest_insert_multiple", {"source_table": STAGING, "column_mapping": "name"}
    )
    assert status == 201, setup
    by_name = insert_multiple(sandbox, [{"u_login": "dee", "u_email_address": "dee@example.com"}, {"Login": "eve"}])
    processed(sandbox, by_name["import_set_id"])
    assert [r["sys_import_state"] for r in row_states(sandbox, by_name["import_set_id"])] == ["inserted", "skipped"]
    assert [u["email"] for u in users(sandbox, "dee")] == ["dee@example.com"]
    assert users(sandbox, "eve") == []


def ensure_transformation_field(sandbox: SandboxServer) -> None:
    """sys_rest_insert_multiple's "Transformation" (synchronous/asynchronous), defined through the
    Table API as an admin would if the sandbox's built-in definition lacks it."""
    query = "name=sys_rest_insert_multiple^element=transformation"
    if not sandbox.rows("sys_dictionary", query):
        status, body = sandbox.call(
            "POST",
            "/api/now/table/sys_dictionary",
            {"name": "sys_rest_insert_multiple", "element": "transformation", "column_label": "Transformation"},
        )
        assert status == 201, body


def test_a_synchronous_setup_answers_per_row(sandbox: SandboxServer) -> None:
    ensure_transformation_field(sandbox)
    status, setup = sandbox.call(
        "POST",
        "/api/now/table/sys_rest_insert_multiple",
        {"source_table": STAGING, "transformation": "synchronous", "column_mapping": "label"},
    )
    assert status == 201, setup
    body = insert_multiple(sandbox, [{"Login": "fay", "Email address": "fay@example.com"}, {"First name": "x"}])
    assert [r["status"] for r in body["result"]] == ["inserted", "skipped"]
    assert body["result"][0]["sys_id"] == users(sandbox, "fay")[0]["sys_id"]
    status, sets = sandbox.call("GET", "/api/now/table/sys_import_set?sysparm_query=mode=synchronous")
    assert [s["state"] for s in sets["result"]] == ["processed"]


def test_ten_thousand_rows_land_once_each(sandbox: SandboxServer) -> None:
    """Big batches: every row gets exactly one outcome and one record, polled to the end."""
    ids = []
    for batch in range(5):
        records = [{"Login": f"u{batch}-{i}", "Email address": f"u{batch}-{i}@example.com"} for i in range(2000)]
        ids.append(insert_multiple(sandbox, records)["import_set_id"])
    for set_id in ids:
        processed(sandbox, set_id)
    rows = sandbox.rows("sys_import_set_row", "sys_import_state=inserted", fields="sys_target_sys_id")
    assert len(rows) == 10_000
    targets = {r["sys_target_sys_id"] for r in rows}
    assert len(targets) == 10_000
    assert len(sandbox.rows("sys_user", "user_nameSTARTSWITHu", fields="sys_id")) == 10_000


QUOTA_CONFIG = f"""
[instance]
insert_multiple = "sync"
insert_multiple_columns = "label_or_name"

[quota]
max_execution_s = 1

[transforms.{STAGING}]
target = "sys_user"
coalesce = ["user_name"]

[transforms.{STAGING}.fields]
user_name = "u_login"
"""


def test_the_transaction_quota_cancels_a_long_request(tmp_path: Path) -> None:
    """Past quota.max_execution_s the answer is 200 with the instance's "maximum execution time
    exceeded" envelope (KB1297438), and the request's work is not done."""
    with SandboxServer(tmp_path / "quota", QUOTA_CONFIG) as sandbox:
        sandbox.faults(latency_ms=3000)
        started = time.monotonic()
        status, body = sandbox.call(
            "POST", f"/api/now/import/{STAGING}/insertMultiple", {"records": [{"u_login": "slow"}]}
        )
        took = time.monotonic() - started
        sandbox.call("DELETE", "/sandbox/faults")
        assert status == 200, body
        assert body["status"] == "failure"
        assert body["error"]["message"] == "Transaction cancelled: maximum execution time exceeded"
        assert 0.9 <= took < scaled(2.9)
        assert users(sandbox, "slow") == []

        status, body = sandbox.call(
            "POST", f"/api/now/import/{STAGING}/insertMultiple", {"records": [{"Login": "quick"}, {"u_login": "q2"}]}
        )
        assert status == 201, body  # in time, and "sync" with either keys: the lenient settings
        assert [r["status"] for r in body["result"]] == ["inserted", "inserted"]


def test_an_import_set_staged_before_a_restart_is_transformed_after_it(tmp_path: Path) -> None:
    """The background transform is not lost with the process: rows staged (and answered) before
    SIGTERM are transformed when the sandbox starts again."""
    slow = CONFIG.replace("async_transform_delay_ms = 1500", "async_transform_delay_ms = 600000")
    with SandboxServer(tmp_path / "restart", slow) as sandbox:
        body = insert_multiple(sandbox, [{"Login": "hal", "Email address": "hal@example.com"}])
        assert import_set(sandbox, body["import_set_id"])["state"] == "loaded"
        sandbox.stop()
        sandbox.config_file.write_text(CONFIG)
        sandbox.start()
        processed(sandbox, body["import_set_id"])
        assert [r["sys_import_state"] for r in row_states(sandbox, body["import_set_id"])] == ["inserted"]
        assert [u["email"] for u in users(sandbox, "hal")] == ["hal@example.com"]


def test_the_quota_cancels_a_long_synchronous_transform_between_chunks(tmp_path: Path) -> None:
    """A synchronous transform commits 200 rows at a time; the quota stops it between chunks:
    the rows done stay done, the rest stay pending, and the import set is left cancelled."""
    config = QUOTA_CONFIG.replace("max_execution_s = 1", "max_execution_s = 0.05")
    with SandboxServer(tmp_path / "cut", config) as sandbox:
        records = [{"Login": f"big{i}"} for i in range(10_000)]
        status, body = sandbox.call("POST", f"/api/now/import/{STAGING}/insertMultiple", {"records": records})
        assert status == 200, body
        assert body["error"]["message"] == "Transaction cancelled: maximum execution time exceeded"
        (cancelled,) = sandbox.rows("sys_import_set", "state=cancelled")
        rows = row_states(sandbox, cancelled["sys_id"])
        done = [r for r in rows if r["sys_import_state"] == "inserted"]
        assert len(rows) == 10_000
        assert 0 < len(done) < 10_000
        assert {r["sys_import_state"] for r in rows} == {"inserted", "pending"}
        assert len(sandbox.rows("sys_user", "user_nameSTARTSWITHbig", fields="sys_id")) == len(done)
