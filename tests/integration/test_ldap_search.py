"""The ldap plugin in-process (as the agent runs it) against a real slapd: paging, value
forms, TLS, nested groups and every error the issue names."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import time
from typing import Any

import pytest
from bridgehead_testing.harness import free_port, scaled
from bridgehead_testing.ldap_data import (
    BIG_GROUP_SIZE,
    SESSION_PEOPLE,
    group_dn,
    person_description,
    person_dn,
    person_photo,
)
from bridgehead_testing.slapd import Slapd

from bridgehead.core.errors import JobError
from bridgehead.plugins.ldap import LdapPlugin
from bridgehead.sdk import Credential, JobContext
from bridgehead.sdk.testing import ListSink, run_plugin

WRONG_PASSWORD = "Wr0ng-ldap-pw-7c1e"  # noqa: S105 - looked for in error messages


@pytest.fixture
async def plugin() -> Any:
    p = LdapPlugin()
    yield p
    await p.aclose()


def reader(server: Slapd) -> Credential:
    return Credential(username=server.reader_dn, password=server.reader_password)


def profile(server: Slapd, **keys: Any) -> dict[str, Any]:
    return {"url": server.url, "credential": "reader", **keys}


async def search(plugin: LdapPlugin, server: Slapd, params: dict[str, Any], **keys: Any) -> list[dict[str, Any]]:
    credential = keys.pop("credential", reader(server))
    return await run_plugin(
        plugin,
        {"connection": "dir", "base": server.suffix, **params},
        profile=profile(server, **keys),
        credential=credential,
        timeout_s=60,
    )


async def failure(plugin: LdapPlugin, server: Slapd, params: dict[str, Any], **keys: Any) -> JobError:
    with pytest.raises(JobError) as caught:
        await search(plugin, server, params, **keys)
    return caught.value


# --- paging and forms ----------------------------------------------------------------------


async def test_ten_thousand_entries_through_paging_exactly_once(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    records = await search(
        plugin, slapd_server, {"base": f"ou=people,{slapd_server.suffix}", "filter": "(uid=*)", "page_size": 400}
    )
    dns = [r["dn"] for r in records]
    assert SESSION_PEOPLE == len(dns) == len(set(dns))
    assert {person_dn(i) for i in range(1, SESSION_PEOPLE + 1)} == set(dns)


async def test_attributes_in_their_documented_forms(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    (record,) = await search(
        plugin,
        slapd_server,
        {"base": person_dn(30), "scope": "base", "attributes": ["*", "entryUUID", "modifyTimestamp"]},
    )
    assert person_dn(30) == record["dn"]
    assert ["user00030"] == record["uid"]  # multi-valued in the schema: a list, even of one
    assert "30" == record["employeeNumber"]  # SINGLE-VALUE in inetOrgPerson: a scalar
    assert ["+1 555 0000030", "+33 1 00000030"] == sorted(record["telephoneNumber"])
    assert [person_description(30)] == record["description"]  # UTF-8, not escaped or mangled
    assert [base64.b64encode(person_photo(30)).decode()] == record["jpegPhoto"]  # binary: base64
    assert len(record["entryUUID"]) == 36 and record["entryUUID"].count("-") == 4  # single-valued
    assert record["modifyTimestamp"].endswith("Z") and record["modifyTimestamp"][10] == "T"  # ISO 8601
    assert "userPassword" not in record


async def test_requested_attributes_only_and_absent_ones_null(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    (record,) = await search(
        plugin, slapd_server, {"base": person_dn(7), "scope": "base", "attributes": ["mail", "jpegPhoto"]}
    )
    assert {"dn": person_dn(7), "mail": ["user00007@example.com"], "jpegPhoto": None} == record


async def test_an_attribute_the_schema_lacks_is_refused(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    error = await failure(plugin, slapd_server, {"attributes": ["mail", "emial"]})
    assert ("invalid_params", True) == (error.code, "emial" in error.message), error.message


async def test_a_group_of_five_thousand_comes_back_whole(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    (record,) = await search(plugin, slapd_server, {"base": group_dn("big"), "scope": "base"})
    assert {person_dn(i) for i in range(1, BIG_GROUP_SIZE + 1)} == set(record["member"])
    assert BIG_GROUP_SIZE == len(record["member"])


async def test_nested_groups_expand(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    records = await search(
        plugin,
        slapd_server,
        {"base": f"ou=groups,{slapd_server.suffix}", "filter": "(cn=nested-a)", "expand_groups": True},
    )
    (record,) = records
    assert {person_dn(i) for i in range(1, 6)} == set(record["member_expanded"])
    assert 5 == len(record["member_expanded"])
    (cycle,) = await search(
        plugin,
        slapd_server,
        {"base": f"ou=groups,{slapd_server.suffix}", "filter": "(cn=cycle-x)", "expand_groups": True},
    )
    assert [person_dn(6)] == cycle["member_expanded"]


async def test_max_entries_stops_the_search(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    records = await search(plugin, slapd_server, {"filter": "(uid=*)", "max_entries": 1234, "page_size": 500})
    assert 1234 == len(records) == len({r["dn"] for r in records})


async def test_scope_one_level(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    records = await search(plugin, slapd_server, {"scope": "one", "attributes": ["1.1"]})
    assert {f"ou=people,{slapd_server.suffix}", f"ou=groups,{slapd_server.suffix}"} <= {r["dn"] for r in records}
    assert all(r["dn"].count(",") == slapd_server.suffix.count(",") + 1 for r in records)


async def test_urls_are_tried_in_turn(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    dead = f"ldap://127.0.0.1:{free_port()}"
    records = await search(
        plugin, slapd_server, {"base": person_dn(1), "scope": "base"}, urls=[dead, slapd_server.url], url=None
    )
    assert [person_dn(1)] == [r["dn"] for r in records]


# --- TLS -----------------------------------------------------------------------------------


async def test_ldaps_and_start_tls_with_the_test_ca(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    params = {"base": person_dn(2), "scope": "base", "attributes": ["uid"]}
    ca = str(slapd_server.ca_file)
    over_ldaps = await search(plugin, slapd_server, params, url=slapd_server.ldaps_url, ca_file=ca)
    over_start_tls = await search(plugin, slapd_server, params, start_tls=True, ca_file=ca)
    assert [{"dn": person_dn(2), "uid": ["user00002"]}] == over_ldaps == over_start_tls


@pytest.mark.parametrize("transport", ["ldaps", "start_tls"])
async def test_a_certificate_from_another_ca_is_refused(
    plugin: LdapPlugin, slapd_server: Slapd, transport: str
) -> None:
    keys: dict[str, Any] = {"ca_file": str(slapd_server.other_ca_file)}
    if transport == "ldaps":
        keys["url"] = slapd_server.ldaps_url
    else:
        keys["start_tls"] = True
    error = await failure(plugin, slapd_server, {"base": person_dn(2), "scope": "base"}, **keys)
    assert "tls_failed" == error.code, error.message
    assert not error.retryable


async def test_verify_false_connects_and_warns(
    plugin: LdapPlugin, slapd_server: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bridgehead.plugins.ldap"):
        records = await search(
            plugin,
            slapd_server,
            {"base": person_dn(3), "scope": "base", "attributes": ["uid"]},
            url=slapd_server.ldaps_url,
            ca_file=str(slapd_server.other_ca_file),
            verify=False,
        )
    assert [person_dn(3)] == [r["dn"] for r in records]
    assert any("verify = false" in r.getMessage() for r in caplog.records)


# --- errors --------------------------------------------------------------------------------


async def test_wrong_password_is_auth_failed_and_never_shown(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    error = await failure(
        plugin,
        slapd_server,
        {},
        credential=Credential(username=slapd_server.reader_dn, password=WRONG_PASSWORD),
    )
    assert ("auth_failed", False) == (error.code, error.retryable), error.message
    assert WRONG_PASSWORD not in error.message and "invalidCredentials" in error.message


async def test_bad_base_dn_is_no_such_object(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    error = await failure(plugin, slapd_server, {"base": f"ou=nowhere,{slapd_server.suffix}"})
    assert "no_such_object" == error.code, error.message


async def test_bad_filter_syntax_is_invalid_params(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    error = await failure(plugin, slapd_server, {"filter": "(uid=user1"})
    assert "invalid_params" == error.code, error.message


async def test_size_limit_exceeded(plugin: LdapPlugin, slapd_server: Slapd) -> None:
    """A search past the server's size limit for its account: the non-paged soft limit (500)
    does not apply to paged searches, so the job sets its own, which the server enforces."""
    error = await failure(plugin, slapd_server, {"filter": "(uid=*)", "size_limit": 50, "page_size": 20})
    assert "size_limit_exceeded" == error.code, error.message


async def test_a_stopped_server_is_source_unavailable(plugin: LdapPlugin, slapd: Slapd) -> None:
    slapd.stop()
    error = await failure(plugin, slapd, {})
    assert ("source_unavailable", True) == (error.code, error.retryable), error.message


async def test_server_gone_mid_search_fails_the_job_cleanly(plugin: LdapPlugin, slapd: Slapd) -> None:
    """The server is stopped once the first page has reached the stream: the search fails
    with source_unavailable where it stands, and the plugin carries on with the next job."""

    class StopAfterFirstPage(ListSink):
        async def put_many(self, items: Any) -> None:
            await super().put_many(items)
            if slapd.running:
                await asyncio.get_running_loop().run_in_executor(None, slapd.stop)

    sink = StopAfterFirstPage()
    ctx: JobContext[Any] = JobContext(
        job_id="j",
        attempt=1,
        profile=plugin.profile_type(plugin="ldap", **profile(slapd, page_size=5)),
        credential=reader(slapd),
        sink=sink,
        deadline=time.monotonic() + 60,
        max_record_bytes=1 << 20,
        logger=logging.getLogger("test"),
    )
    params = plugin.params_type(connection="dir", base=slapd.suffix, filter="(uid=*)", page_size=5)
    with pytest.raises(JobError) as caught:
        await plugin.run(ctx, params)
    assert "source_unavailable" == caught.value.code, caught.value.message
    # Pages fetched ahead before the server went are delivered; then the job fails.
    assert 5 <= len(sink.records) < 30 and len(sink.records) % 5 == 0, len(sink.records)
    slapd.start()
    assert 30 == len(await search(plugin, slapd, {"filter": "(uid=*)"}))


async def test_a_hung_server_is_abandoned_at_the_job_timeout(plugin: LdapPlugin, slapd: Slapd) -> None:
    """slapd frozen (SIGSTOP): the kernel still accepts the connection, nothing answers. The
    job ends at its own 2 s timeout, not at the profile's 30 s socket timeout nor the 10 s
    grace a blocked thread gets, because the connection is shut under the waiting thread."""
    assert slapd.pid is not None
    pid = slapd.pid
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            await run_plugin(
                plugin,
                {"connection": "dir", "base": slapd.suffix, "filter": "(uid=*)"},
                profile=profile(slapd),
                credential=reader(slapd),
                timeout_s=2,
            )
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert elapsed < 2 + scaled(3), elapsed
    assert 30 == len(await search(plugin, slapd, {"filter": "(uid=*)"}))
