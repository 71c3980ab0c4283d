"""The OpenLDAP test server itself (tests/slapd.py), against the real Debian slapd.

Nothing here skips: without slapd these tests fail, so a machine that cannot run the LDAP
integration tests says so.
"""

from __future__ import annotations

import os
import socket
import ssl
import uuid
from pathlib import Path
from typing import Any

import ldap3
import pytest
from bridgehead_testing.ldap_data import (
    BIG_GROUP_SIZE,
    SESSION_PEOPLE,
    base_entries,
    group_dn,
    people,
    person_description,
    person_dn,
    person_photo,
    small_entries,
    to_ldif,
)
from bridgehead_testing.slapd import MODULE_DIR, SLAPADD, SLAPD, SOFT_SIZE_LIMIT, Slapd, SlapdError, Transport
from ldap3.core.exceptions import LDAPBindError, LDAPSocketOpenError, LDAPStartTLSError

PEOPLE_FILTER = "(objectClass=inetOrgPerson)"


def read_entry(conn: ldap3.Connection, dn: str, attributes: list[str] | None = None) -> dict[str, Any]:
    """One entry's attributes as lists of values (formatted by the schema: bytes for binary)."""
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=attributes or ["*", "+"])
    assert conn.response, (dn, conn.result)
    attrs: dict[str, Any] = conn.response[0]["attributes"]
    return attrs


def test_slapd_and_slapadd_are_installed() -> None:
    for binary in (SLAPD, SLAPADD):
        assert os.access(binary, os.X_OK), f"{binary} missing: apt-get install slapd"
    assert (MODULE_DIR / "back_mdb.so").exists()


# --- the shared session server (read-only) -------------------------------------------------------


def test_paged_search_as_reader_returns_every_person(slapd_server: Slapd) -> None:
    with slapd_server.connected("reader", get_info="NO_INFO") as conn:
        entries = conn.extend.standard.paged_search(
            slapd_server.suffix, PEOPLE_FILTER, attributes=["uid"], paged_size=1000, generator=False
        )
        assert conn.result["description"] == "success"
    uids = {e["attributes"]["uid"][0] for e in entries if e["type"] == "searchResEntry"}
    assert len(uids) == SESSION_PEOPLE == 10_000


@pytest.mark.parametrize("size_limit", [0, 20_000])
def test_plain_search_as_reader_stops_at_the_size_limit(slapd_server: Slapd, size_limit: int) -> None:
    # Asking for more than the soft limit does not help a non-root client: the hard limit is the soft one.
    with slapd_server.connected("reader", get_info="NO_INFO") as conn:
        conn.search(slapd_server.suffix, PEOPLE_FILTER, attributes=["uid"], size_limit=size_limit)
        assert conn.result["description"] == "sizeLimitExceeded"
        assert len(conn.response or []) == SOFT_SIZE_LIMIT


def test_rootdn_is_not_size_limited(slapd_server: Slapd) -> None:
    with slapd_server.connected("admin", get_info="NO_INFO") as conn:
        conn.search(slapd_server.suffix, PEOPLE_FILTER, attributes=["1.1"])
        assert conn.result["description"] == "success"
        assert len(conn.response or []) == SESSION_PEOPLE


def test_slapadd_entries_carry_operational_attributes(slapd_server: Slapd) -> None:
    # Without the schema ldap3 leaves every value a string in a list (with it, entryUUID would be a
    # bare string and the timestamps datetimes).
    with slapd_server.connected("reader", get_info="NO_INFO") as conn:
        seen = set()
        for dn in (person_dn(1), person_dn(SESSION_PEOPLE), group_dn("big"), slapd_server.suffix):
            attrs = read_entry(conn, dn, ["entryUUID", "entryCSN", "createTimestamp", "modifyTimestamp"])
            assert set(attrs) == {"entryUUID", "entryCSN", "createTimestamp", "modifyTimestamp"}, dn
            seen.add(uuid.UUID(attrs["entryUUID"][0]))
        assert len(seen) == 4
        # Both are indexed; an incremental sync filters on them.
        conn.search(slapd_server.suffix, f"(entryUUID={min(seen)})", attributes=["1.1"])
        assert len(conn.response or []) == 1
        conn.extend.standard.paged_search(
            slapd_server.suffix, "(modifyTimestamp>=20000101000000Z)", attributes=["1.1"], generator=False
        )
        assert conn.result["description"] == "success"


def test_people_have_multi_valued_binary_and_non_ascii_attributes(slapd_server: Slapd) -> None:
    with slapd_server.connected("reader") as conn:  # with the schema, so jpegPhoto comes back as bytes
        one = read_entry(conn, person_dn(1))
        thirty = read_entry(conn, person_dn(30))
    assert one["telephoneNumber"] == ["+1 555 0000001"]
    assert "jpegPhoto" not in one
    assert one["description"] == [person_description(1)]
    assert "日本" in one["description"][0] and "é" in one["description"][0]
    assert len(thirty["telephoneNumber"]) == 2
    assert thirty["jpegPhoto"] == [person_photo(30)]


def test_big_group_has_every_member(slapd_server: Slapd) -> None:
    with slapd_server.connected("reader", get_info="NO_INFO") as conn:
        attrs = read_entry(conn, group_dn("big"), ["member"])
    assert len(attrs["member"]) == BIG_GROUP_SIZE == 5_000
    assert {m.lower() for m in attrs["member"]} == {person_dn(i).lower() for i in range(1, BIG_GROUP_SIZE + 1)}


def test_nested_groups(slapd_server: Slapd) -> None:
    with slapd_server.connected("reader", get_info="NO_INFO") as conn:

        def members(name: str) -> set[str]:
            return {m.lower() for m in read_entry(conn, group_dn(name), ["member"])["member"]}

        assert members("nested-a") == {group_dn("nested-b"), person_dn(1)}
        assert members("nested-b") == {group_dn("nested-c"), person_dn(2), person_dn(3)}
        assert members("nested-c") == {person_dn(4), person_dn(5)}
        assert group_dn("cycle-x") in members("cycle-y") and group_dn("cycle-y") in members("cycle-x")
        # member is indexed: which groups hold user00001 directly?
        conn.search(f"ou=groups,{slapd_server.suffix}", f"(member={person_dn(1)})", attributes=["cn"])
        assert {e["attributes"]["cn"][0] for e in conn.response or []} == {"big", "nested-a"}


def test_anonymous_sees_no_entries(slapd_server: Slapd) -> None:
    with slapd_server.connected("anonymous", get_info="NO_INFO") as conn:
        conn.search(slapd_server.suffix, "(objectClass=*)", attributes=["1.1"])
        assert not conn.response
        conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["namingContexts"])
        assert conn.response and conn.response[0]["attributes"]["namingContexts"] == [slapd_server.suffix]


def test_wrong_password_is_refused(slapd_server: Slapd) -> None:
    with pytest.raises(LDAPBindError, match="invalidCredentials"):
        slapd_server.connection("reader", get_info="NO_INFO", password="wrong")  # noqa: S106


# --- TLS -----------------------------------------------------------------------------------------

TLS_TRANSPORTS: list[Transport] = ["starttls", "ldaps"]


@pytest.mark.parametrize("transport", TLS_TRANSPORTS)
def test_tls_with_the_test_ca(slapd_server: Slapd, transport: Transport) -> None:
    with slapd_server.connected("reader", transport=transport, get_info="NO_INFO") as conn:
        assert conn.tls_started if transport == "starttls" else conn.server.ssl
        assert isinstance(conn.socket, ssl.SSLSocket)
        assert conn.extend.standard.who_am_i() == f"dn:{slapd_server.reader_dn}"


@pytest.mark.parametrize("transport", TLS_TRANSPORTS)
def test_tls_with_another_ca_is_refused(slapd_server: Slapd, transport: Transport) -> None:
    error = LDAPStartTLSError if transport == "starttls" else LDAPSocketOpenError
    with pytest.raises(error, match="CERTIFICATE_VERIFY_FAILED"):
        slapd_server.connection("reader", transport=transport, ca_file=slapd_server.other_ca_file)


@pytest.mark.parametrize("server_hostname", ["127.0.0.1", "localhost"])
def test_server_certificate_names_both_loopback_names(slapd_server: Slapd, server_hostname: str) -> None:
    # Python's own verification (chain and name), independent of ldap3's.
    context = ssl.create_default_context(cafile=str(slapd_server.ca_file))
    with (
        socket.create_connection((slapd_server.host, slapd_server.ldaps_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


# --- a fresh small server per test (writes, stop, restart) ----------------------------------------


def test_small_server_contents(slapd: Slapd) -> None:
    with slapd.connected("reader", get_info="NO_INFO") as conn:
        conn.search(slapd.suffix, PEOPLE_FILTER, attributes=["1.1"])
        assert len(conn.response or []) == 30
        assert len(read_entry(conn, group_dn("small"), ["member"])["member"]) == 10


def test_online_writes(slapd: Slapd) -> None:
    dn = f"uid=new,ou=people,{slapd.suffix}"
    slapd.add(dn, {"objectClass": ["inetOrgPerson"], "uid": ["new"], "cn": ["New"], "sn": ["Person"]})
    with slapd.connected("reader", get_info="NO_INFO") as conn:
        added = read_entry(conn, dn)
        assert uuid.UUID(added["entryUUID"][0])
        slapd.replace(dn, "mail", ["new@example.com"])
        modified = read_entry(conn, dn)
        assert modified["mail"] == ["new@example.com"]
        assert modified["entryUUID"] == added["entryUUID"]
        assert modified["entryCSN"] != added["entryCSN"]  # modifyTimestamp has only 1 s resolution
        slapd.modify(dn, {"mail": [(ldap3.MODIFY_DELETE, [])]})
        assert "mail" not in read_entry(conn, dn)
        slapd.delete(dn)
        conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE)
        assert conn.result["description"] == "noSuchObject"
    with pytest.raises(SlapdError, match="noSuchObject"):
        slapd.delete(dn)


def test_load_needs_the_server_stopped(slapd: Slapd) -> None:
    with pytest.raises(SlapdError, match="stopped"):
        slapd.load(people(1, slapd.suffix, start=99))


def test_stop_ends_the_process_and_refuses_connections(slapd: Slapd) -> None:
    pid = slapd.pid
    assert pid is not None and slapd.running
    open_conn = slapd.connection("reader", get_info="NO_INFO")
    slapd.stop()
    assert not slapd.running and slapd.pid is None
    assert open_conn.closed  # stop() closes what connection() handed out
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie (a zombie still accepts signal 0)
    for port in (slapd.port, slapd.ldaps_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((slapd.host, port), timeout=5).close()
    with pytest.raises(LDAPSocketOpenError, match="refused"):
        slapd.connection("reader")
    slapd.stop()  # idempotent


def test_restart_keeps_data_and_addresses(slapd: Slapd) -> None:
    url, ldaps_url, old_pid = slapd.url, slapd.ldaps_url, slapd.pid
    slapd.replace(person_dn(1), "mail", ["kept@example.com"])
    slapd.restart()
    assert (slapd.url, slapd.ldaps_url) == (url, ldaps_url)
    assert slapd.pid != old_pid
    with slapd.connected("reader", transport="ldaps", get_info="NO_INFO") as conn:
        assert read_entry(conn, person_dn(1), ["mail"])["mail"] == ["kept@example.com"]


def test_context_manager_and_load_before_start(tmp_path: Path) -> None:
    server = Slapd(tmp_path / "own", suffix="dc=corp,dc=test")
    server.load(small_entries(server.suffix))
    server.load(people(2, server.suffix, start=1000))  # a second slapadd into the same database
    with server:
        with server.connected("reader", get_info="NO_INFO") as conn:
            conn.search(server.suffix, PEOPLE_FILTER, attributes=["1.1"])
            assert len(conn.response or []) == 32
        pid = server.pid
    assert pid is not None and not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_failed_start_reports_the_log_and_leaves_no_process(tmp_path: Path) -> None:
    server = Slapd(tmp_path / "broken")
    with server.config_file.open("a") as f:
        f.write("not-a-directive here\n")
    with pytest.raises(SlapdError, match="(?s)exited 1 during start.*unknown directive <not-a-directive>"):
        server.start()
    assert not server.running


def test_a_port_taken_before_start_is_replaced(tmp_path: Path) -> None:
    server = Slapd(tmp_path / "moved")
    server.load(base_entries(server.suffix))
    with socket.socket() as squatter:
        squatter.bind((server.host, server.port))
        squatter.listen()
        taken = server.port
        with server:
            assert server.port != taken and server.url == f"ldap://{server.host}:{server.port}"
            with server.connected("reader", get_info="NO_INFO") as conn:
                assert conn.extend.standard.who_am_i() == f"dn:{server.reader_dn}"


def test_ldif_encodes_what_is_not_a_safe_string() -> None:
    (text,) = to_ldif(
        [
            (
                "cn=é,dc=x",
                {"cn": ["é"], "a": [" lead"], "b": [":colon"], "c": ["trail "], "d": [b"\x00\xff"], "e": ["ok"]},
            )
        ]
    )
    assert text == ("dn:: Y249w6ksZGM9eA==\ncn:: w6k=\na:: IGxlYWQ=\nb:: OmNvbG9u\nc:: dHJhaWwg\nd:: AP8=\ne: ok\n\n")
