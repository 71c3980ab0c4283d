"""LDAP values in their JSON forms, AD's identifier strings, and nested group expansion."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bridgehead.plugins.ldap.groups import GroupMembers
from bridgehead.plugins.ldap.values import (
    BOOLEAN_SYNTAX,
    INTEGER_SYNTAX,
    TIME_SYNTAX,
    EntryEncoder,
    form_for,
    guid_string,
    sid_string,
)

OCTETS = "1.3.6.1.4.1.1466.115.121.1.40"
DIRECTORY_STRING = "1.3.6.1.4.1.1466.115.121.1.15"


def test_objectguid_string_is_the_form_ad_tools_show() -> None:
    # The GUID "3f2504e0-4f89-11d3-9a0c-0305e82c3301" as AD stores it: first three fields
    # little-endian.
    stored = bytes.fromhex("e004253f894fd3119a0c0305e82c3301")
    assert "3f2504e0-4f89-11d3-9a0c-0305e82c3301" == guid_string(stored)
    assert uuid.UUID("3f2504e0-4f89-11d3-9a0c-0305e82c3301").bytes_le == stored
    assert guid_string(b"short") is None


def test_objectsid_string() -> None:
    # S-1-5-21-1004336348-1177238915-682003330-512 (a domain's Domain Admins group).
    subs = [21, 1004336348, 1177238915, 682003330, 512]
    stored = bytes([1, len(subs)]) + (5).to_bytes(6, "big") + b"".join(s.to_bytes(4, "little") for s in subs)
    assert "S-1-5-21-1004336348-1177238915-682003330-512" == sid_string(stored)
    assert sid_string(stored[:-1]) is None  # length disagrees with the sub-authority count


@pytest.mark.parametrize(
    ("stored", "iso"),
    [
        (b"20240131120000Z", "2024-01-31T12:00:00Z"),
        (b"20240131120000.123Z", "2024-01-31T12:00:00.123Z"),
        (b"20240131120000+0130", "2024-01-31T12:00:00+01:30"),
        (b"not a time", "not a time"),
    ],
)
def test_generalized_time_as_iso_8601(stored: bytes, iso: str) -> None:
    assert iso == form_for(TIME_SYNTAX, True, "modifyTimestamp").convert(stored)


def test_forms_by_syntax_and_cardinality() -> None:
    forms = {
        "uidnumber": form_for(INTEGER_SYNTAX, True, "uidNumber"),
        "enabled": form_for(BOOLEAN_SYNTAX, True, "enabled"),
        "jpegphoto": form_for(OCTETS, False, "jpegPhoto"),
        "mail": form_for(DIRECTORY_STRING, False, "mail"),
        "objectguid": form_for(DIRECTORY_STRING, True, "objectGUID"),  # binary whatever the schema says
    }
    encoder = EntryEncoder(forms, ["uidNumber", "enabled", "jpegPhoto", "mail", "objectGUID", "title"])
    guid = uuid.uuid4()
    record = encoder.record(
        "cn=x",
        {
            "uidNumber": [b"1001"],
            "enabled": [b"TRUE"],
            "jpegPhoto": [b"\xff\xd8\xff"],
            "mail": [b"a@example.com"],
            "objectGUID": [guid.bytes_le],
            "unknownToSchema": [b"\xff\xfe", b"ok"],
        },
    )
    assert {
        "dn": "cn=x",
        "uidNumber": 1001,
        "enabled": True,
        "jpegPhoto": ["/9j/"],
        "mail": ["a@example.com"],  # multi-valued in the schema: a list even of one
        "objectGUID": "".join(__import__("base64").b64encode(guid.bytes_le).decode()),
        "objectGUID_string": str(guid),
        "unknownToSchema": ["//4=", "ok"],  # not UTF-8: base64
        "title": None,  # requested, absent: null, so every record has the same keys
    } == record


def test_ranged_attribute_keeps_its_bare_name() -> None:
    encoder = EntryEncoder({"member": form_for(DIRECTORY_STRING, False, "member")}, None)
    record = encoder.record("cn=g", {"member;range=0-*": [b"cn=a", b"cn=b"]})
    assert {"dn": "cn=g", "member": ["cn=a", "cn=b"]} == record


def test_nested_groups_expand_to_their_leaves_once_and_cycles_end() -> None:
    groups = GroupMembers()
    groups.add("cn=A", {"member": [b"cn=B", b"uid=1"]})
    groups.add("cn=B", {"member": [b"cn=C", b"uid=2", b"uid=1"]})
    groups.add("cn=C", {"uniqueMember": [b"uid=3", b"cn=A"]})  # C contains A: a cycle
    assert ["uid=3", "uid=2", "uid=1"] == groups.members_of("cn=A")
    assert ["uid=3", "uid=1", "uid=2"] == groups.members_of("cn=b")  # DNs compare without case
    record: dict[str, object] = {"dn": "cn=C", "uniqueMember": ["uid=3", "cn=A"]}
    groups.expand(record)
    assert ["uid=3", "uid=2", "uid=1"] == record["member_expanded"]
    plain: dict[str, object] = {"dn": "uid=1", "cn": "x"}
    groups.expand(plain)
    assert "member_expanded" not in plain


def test_active_directory_ranges_merge_whole_with_raw_decoding() -> None:
    """AD returns at most 1,500 values of a large attribute per read (member;range=0-1499) and
    ldap3's auto_range reads the rest. Active Directory cannot run here, so its answers are
    played by a stand-in search function; ldap3's own range code runs on the raw-decoded entry
    shape the plugin installs (RangeScratch), and the record has every member once."""
    import ldap3  # noqa: PLC0415

    from bridgehead.plugins.ldap.client import RangeScratch  # noqa: PLC0415

    members = [f"cn=u{i},dc=ad".encode() for i in range(4000)]

    def entry(values: dict[str, list[bytes]]) -> dict[str, object]:
        return {"type": "searchResEntry", "dn": "cn=g,dc=ad", "raw_attributes": values, "attributes": RangeScratch()}

    conn = ldap3.Connection(ldap3.Server("ldap://127.0.0.1:1", get_info=ldap3.NONE), auto_range=True)
    asked: list[str] = []

    def ad_search(**kwargs: object) -> bool:  # a stand-in for AD's answer to a ranged read
        (requested,) = kwargs["attributes"]  # type: ignore[misc]
        asked.append(requested)
        low = int(requested.split("=")[1].split("-")[0])
        high = min(low + 1499, len(members) - 1)
        name = f"member;range={low}-{'*' if high == len(members) - 1 else high}"
        conn.response = [entry({name: members[low : high + 1]})]  # type: ignore[misc]
        return True

    conn.search = ad_search  # type: ignore[method-assign]
    first = entry({"cn": [b"g"], "member;range=0-1499": members[:1500]})
    assert conn.strategy.do_search_on_auto_range({"dereferenceAlias": 0}, [first])
    assert ["member;range=1500-*", "member;range=3000-*"] == asked
    encoder = EntryEncoder({"member": form_for(DIRECTORY_STRING, False, "member")}, None)
    record = encoder.record("cn=g,dc=ad", first["raw_attributes"])  # type: ignore[arg-type]
    assert [m.decode() for m in members] == record["member"]


@pytest.mark.parametrize(
    ("result", "code"),
    [(3, "time_limit_exceeded"), (4, "size_limit_exceeded"), (11, "size_limit_exceeded"), (0, None)],
)
def test_limits_the_server_returns_rather_than_raises_fail_the_job(result: int, code: str | None) -> None:
    """ldap3 returns timeLimitExceeded (3), sizeLimitExceeded (4) and adminLimitExceeded (11)
    as results even with raise_exceptions: a search cut short must fail, not look complete.
    (Size limits are also tested against slapd; a time limit cannot be forced there.)"""
    from types import SimpleNamespace  # noqa: PLC0415

    from bridgehead.core.errors import SourceError  # noqa: PLC0415
    from bridgehead.plugins.ldap.client import check_limits  # noqa: PLC0415

    conn: Any = SimpleNamespace(result={"result": result, "description": "x", "message": "y"})
    if code is None:
        check_limits(conn, doing="searching")
        return
    with pytest.raises(SourceError) as caught:
        check_limits(conn, doing="searching")
    assert code == caught.value.code
