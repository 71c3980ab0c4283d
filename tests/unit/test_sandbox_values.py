"""The sandbox's value forms (values.py) and schema definitions (schema.py), without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from bridgehead_sandbox.config import FieldSection, TableSection
from bridgehead_sandbox.errors import SnError
from bridgehead_sandbox.records import new_record, now_text
from bridgehead_sandbox.schema import FieldDef, Schema, SchemaError
from bridgehead_sandbox.store import Store
from bridgehead_sandbox.values import store_value


def field(kind: str, max_length: int = 40) -> FieldDef:
    return FieldDef("f", "F", kind, max_length)


@pytest.mark.parametrize(
    ("kind", "given", "stored"),
    [
        ("boolean", True, "true"),
        ("boolean", "TRUE", "true"),
        ("boolean", "1", "true"),
        ("boolean", 0, "false"),
        ("boolean", "nonsense", "false"),
        ("boolean", "", ""),
        ("integer", 42, "42"),
        ("integer", "007", "7"),
        ("integer", "2.5", "3"),
        ("integer", "abc", ""),
        ("integer", "1E+30", ""),  # more digits than the field holds: stored empty, not a 500
        ("decimal", "1E+30", ""),
        ("decimal", "1234.500", "1234.5"),
        ("decimal", "2400.00", "2400"),
        ("decimal", 1.005, "1.01"),
        ("decimal", "1e3", "1000"),
        ("decimal", "-0.001", "0"),
        ("float", "0.12345678", "0.1234568"),
        ("glide_date_time", "2024-05-01 10:00:00", "2024-05-01 10:00:00"),
        ("glide_date_time", "2024-05-01T10:00:00Z", "2024-05-01 10:00:00"),
        ("glide_date_time", "2024-05-01T10:00:00.123+02:00", "2024-05-01 08:00:00"),
        ("glide_date_time", "2024-05-01T23:30:00-0130", "2024-05-02 01:00:00"),
        ("glide_date_time", "2024-05-01", "2024-05-01 00:00:00"),
        ("glide_date_time", "2024-02-30 00:00:00", ""),
        ("glide_date_time", "yesterday", ""),
        ("glide_date", "2024-05-01T23:00:00Z", "2024-05-01"),
        ("string", "x" * 50, "x" * 40),
        ("string", None, ""),
        ("string", {"value": "abc", "link": "https://i/x"}, "abc"),
        ("string", ["a", 1], '["a",1]'),
        ("reference", "cn=" + "x" * 80, "cn=" + "x" * 80),  # plain strings in the sandbox: not cut
    ],
)
def test_values_take_the_instances_form(kind: str, given: object, stored: str) -> None:
    """Each type stores a value as an instance returns it: strings, canonical numbers, UTC dates."""
    assert stored == store_value(field(kind), given)


def test_tables_inherit_fields_and_labels_match_without_case() -> None:
    """A child table has its parents' fields and the sys_* ones; field_by_label ignores case."""
    schema = Schema()
    server = schema.table("cmdb_ci_linux_server")
    assert server is not None
    assert "cmdb_ci_server" == server.super_class
    assert {"name", "ip_address", "os", "host_name", "sys_id", "sys_updated_on"} <= set(server.fields)
    by_label = server.field_by_label("ip ADDRESS")
    assert by_label is not None and "ip_address" == by_label.name
    assert server.field_by_label("nothing") is None
    user = schema.table("sys_user")
    assert user is not None
    assert (40, 100) == (user.fields["user_name"].max_length, user.fields["email"].max_length)
    assert schema.table("u_unknown") is None


def test_config_tables_and_bad_definitions() -> None:
    """[tables.*] may extend each other in any order; loops, unknown parents and types are refused."""
    tables = {
        "u_child": TableSection(extends="u_parent", fields={"u_n": FieldSection(type="integer")}),
        "u_parent": TableSection(label="Parent", fields={"u_text": FieldSection(max_length=10)}),
    }
    schema = Schema.from_config(tables)
    child = schema.table("u_child")
    assert child is not None
    assert ("integer", 10) == (child.fields["u_n"].type, child.fields["u_text"].max_length)
    # A built-in table gains a custom field and keeps its label, parent and fields.
    extended = Schema.from_config({"cmdb_ci_linux_server": TableSection(fields={"u_directory_id": FieldSection()})})
    linux = extended.table("cmdb_ci_linux_server")
    assert linux is not None
    assert ("Linux Server", "cmdb_ci_server") == (linux.label, linux.super_class)
    assert {"u_directory_id", "host_name"} <= set(linux.fields)
    with pytest.raises(SchemaError, match="loop"):
        Schema.from_config({"u_a": TableSection(extends="u_b"), "u_b": TableSection(extends="u_a")})
    with pytest.raises(SchemaError, match="not defined"):
        Schema.from_config({"u_a": TableSection(extends="u_missing")})
    with pytest.raises(SchemaError, match="unknown type"):
        Schema.from_config({"u_a": TableSection(fields={"u_x": FieldSection(type="strnig")})})
    with pytest.raises(SchemaError, match="not a field name"):
        Schema().define_field("sys_user", FieldDef("Bad Name", "", "string", 40))


def test_coalesce_lookups_ignore_case_unless_case_sensitive(tmp_path: Path) -> None:
    """Table.find (the transform's coalesce lookup) matches a key in any case, as an instance
    does, and exactly with case_sensitive; strict tables store their fields' forms."""
    for case_sensitive, expected in ((False, ["Alice"]), (True, [])):
        store = Store(tmp_path / str(case_sensitive), schema=Schema, case_sensitive=case_sensitive)
        try:
            with store.transaction(now_text()) as writer:
                users = writer.table("sys_user")
                stored = writer.insert(
                    users, new_record({"user_name": "Alice", "active": "1", "u_x": "y"}, "t", writer.now)
                )
            assert ("true", "u_x" in stored) == (stored["active"], False)
            found = users.find(("user_name",), ("ALICE",))
            assert expected == ([found["user_name"]] if found else [])
            assert expected == [r["user_name"] for r in users.find_all(("user_name",), ("alice",))]
            with pytest.raises(SnError, match="Invalid table"), store.transaction(now_text()) as writer:
                writer.table("u_undefined")
        finally:
            store.close()
