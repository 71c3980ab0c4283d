"""How a record becomes a ServiceNow row: sink specs, maps, passthrough, text values, the LDAP
presets, and reading a 429's wait."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest

from bridgehead.control.sinks.client import _retry_after
from bridgehead.control.sinks.presets import PRESETS, member_dns, preset_row
from bridgehead.control.sinks.spec import as_text, parse_sink, passthrough_name, to_row


def test_values_become_text_as_the_import_set_api_needs() -> None:
    assert ["", "true", "false", "42", "1.5", "é", '["a",1]', '{"k":null}'] == [
        as_text(v) for v in (None, True, False, 42, 1.5, "é", ["a", 1], {"k": None})
    ]


def test_map_renames_and_passthrough_prefixes_the_rest() -> None:
    spec = parse_sink({"servicenow": "corp", "import_set": "u_imp", "map": {"u_email": "mail"}})
    record = {"mail": "a@b.c", "givenName": "Ann", "op": "upsert", "employee-number": 7}
    assert {"u_email": "a@b.c", "u_givenname": "Ann", "u_employee_number": "7"} == to_row(spec, record)
    closed = parse_sink({"servicenow": "corp", "import_set": "u_imp", "map": {"u_email": "mail"}, "passthrough": False})
    assert {"u_email": "a@b.c"} == to_row(closed, record)
    assert {"u_email": ""} == to_row(closed, {})  # a mapped key the record lacks is sent empty
    assert "u_a_b_c" == passthrough_name("A.B c")


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ({"servicenow": "corp"}, "exactly one of import_set and table"),
        ({"servicenow": "corp", "import_set": "a", "table": "b"}, "exactly one"),
        ({"servicenow": "corp", "table": "cmdb_ci"}, "needs coalesce"),
        ({"servicenow": "corp", "import_set": "u_x", "coalesce": ["name"]}, "transform map"),
        ({"servicenow": "corp", "table": "t", "coalesce": ["name"], "passthrough": False}, "not in map"),
        ({"servicenow": "corp", "preset": "ldap_users", "table": "sys_user"}, "a preset decides"),
        ({"servicenow": "corp", "import_set": "Bad-Name"}, "import_set"),
        ({"servicenow": "corp", "import_set": "u_x", "extra": 1}, "extra"),
        ({"servicenow": "corp", "preset": "ad_computers"}, "preset"),
    ],
)
def test_bad_sinks_are_refused_with_the_reason(sink: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sink(sink)


def test_the_ldap_users_preset_makes_a_sys_user_row() -> None:
    record = {
        "op": "upsert",
        "id": "5f1c-uuid",
        "dn": "uid=ann,ou=people,dc=example,dc=com",
        "uid": "ann",
        "sAMAccountName": None,
        "givenName": "Ann",
        "sn": "Lee",
        "mail": ["ann@example.com", "a.lee@example.com"],
    }
    row = preset_row(PRESETS["ldap_users"], record)
    assert not row.delete
    assert {
        "u_directory_id": "5f1c-uuid",
        "user_name": "ann",
        "first_name": "Ann",
        "last_name": "Lee",
        "email": "ann@example.com",
        "phone": "",
        "title": "",
        "source": "ldap:uid=ann,ou=people,dc=example,dc=com",
        "active": "true",
    } == row.fields
    deletion = preset_row(PRESETS["ldap_users"], {"op": "delete", "id": "5f1c-uuid", "dn": None})
    assert deletion.delete and {"u_directory_id": "5f1c-uuid"} == deletion.fields


def test_group_members_from_member_and_unique_member() -> None:
    assert ["a", "b", "c"] == member_dns({"member": ["a", "b"], "uniqueMember": "c", "cn": "g"})
    assert [] == member_dns({"cn": "empty"})


def test_a_429_says_how_long_to_wait() -> None:
    assert 7.0 == _retry_after({"Retry-After": "7"})
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (_retry_after({"Retry-After": later}) or 0) <= 31
    assert 9 < (_retry_after({"X-RateLimit-Reset": str(int(time.time()) + 10)}) or 0) <= 11
    assert _retry_after({}) is None
