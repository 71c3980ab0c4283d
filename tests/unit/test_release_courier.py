"""The courier's rules against the in-memory store, with links that record what they are sent:
one agent of a cluster at a time, a failed update not offered again until the admin sets the
version again, bytes only for the release offered to that agent, a slot that times out.
The same paths run for real in tests/integration/test_self_update.py."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridgehead.control.config import ReleasesSection
from bridgehead.control.dispatch.links import AgentLink
from bridgehead.control.releases.courier import Courier
from bridgehead.control.releases.files import ReleaseFiles
from bridgehead.control.store.base import ReleaseRow
from bridgehead.control.store.memory import MemoryStore
from bridgehead.protocol import FetchRelease, ProtocolError, ReleaseChunk, ServerMessage, UpdateOffer, UpdateStatus

RELEASE = b"#!/bin/sh\necho a release\n" * 100


def link(name: str, cluster: str = "c", version: str = "1.0", session: str = "s1") -> tuple[AgentLink, list[object]]:
    sent: list[object] = []

    def send(message: ServerMessage) -> None:
        sent.append(message)

    def close(code: int, reason: str) -> None:
        sent.append(("close", code, reason))

    return (
        AgentLink(
            name=name,
            cluster=cluster,
            session_id=session,
            plugins=set(),
            credit=1,
            send=send,
            close=close,
            encode=lambda m: b"",
            send_encoded=lambda b: None,
            version=version,
        ),
        sent,
    )


async def courier_with(
    tmp_path: Path, update_timeout_s: float = 900.0
) -> tuple[Courier, MemoryStore, dict[str, AgentLink]]:
    store = MemoryStore()
    files = ReleaseFiles(tmp_path)
    received = await files.receive(_chunks(RELEASE), 1 << 20)
    await asyncio.to_thread(files.commit, received, "2.0")
    digest = hashlib.sha256(RELEASE).hexdigest()
    await store.add_release(ReleaseRow("2.0", len(RELEASE), digest, "c2ln", 1.0, "admin"))
    links: dict[str, AgentLink] = {}
    courier = Courier(store, files, ReleasesSection(poll_s=3600, update_timeout_s=update_timeout_s), links)
    await courier.start()
    return courier, store, links


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def offers(sent: list[object]) -> list[UpdateOffer]:
    return [m for m in sent if isinstance(m, UpdateOffer)]


async def test_one_agent_of_a_cluster_at_a_time_and_the_next_after_a_commit(tmp_path: Path) -> None:
    courier, store, links = await courier_with(tmp_path)
    (a, sent_a), (b, sent_b) = link("a"), link("b")
    links.update(a=a, b=b)
    await store.set_wanted_release("c", "2.0", 10.0)
    courier.wanted = await store.wanted_releases()
    courier.attached(a)
    courier.attached(b)
    await settle()
    assert [1, 0] == [len(offers(sent_a)), len(offers(sent_b))]
    a.version = "2.0"  # its new session: the new release says hello
    courier.handle(a, UpdateStatus(version="2.0", state="committed"))
    await settle()
    assert 1 == len(offers(sent_b)), "the next agent is offered the release once the first committed"
    assert ["offered", "committed"] == [r.state for r in reversed(await store.updates(agent="a"))]
    await courier.stop()


async def test_a_failed_update_is_not_offered_again_until_the_version_is_set_again(tmp_path: Path) -> None:
    courier, store, links = await courier_with(tmp_path)
    a, sent = link("a")
    links["a"] = a
    await store.set_wanted_release("c", "2.0", 10.0)
    courier.wanted = await store.wanted_releases()
    courier.attached(a)
    await settle()
    courier.handle(a, UpdateStatus(version="2.0", state="rolled_back", message="no healthy session"))
    await settle()
    for _ in range(3):  # reconnects and polls
        courier.attached(a)
        await courier._consider("c")
        await settle()
    assert 1 == len(offers(sent))
    # After a restart of the control plane too: the failure is read back from the store.
    courier = Courier(store.reopen(), courier.files, courier.config, links)
    await courier.start()
    courier.attached(a)
    await settle()
    assert 1 == len(offers(sent))
    await store.set_wanted_release("c", "2.0", 10_000_000_000.0)  # the admin sets it again
    courier.wanted = await store.wanted_releases()
    courier.attached(a)
    await settle()
    assert 2 == len(offers(sent))
    await courier.stop()


async def test_bytes_only_for_the_release_offered_to_that_agent_one_request_at_a_time(tmp_path: Path) -> None:
    courier, store, links = await courier_with(tmp_path)
    (a, sent_a), (b, _) = link("a"), link("b")
    links.update(a=a, b=b)
    await store.set_wanted_release("c", "2.0", 10.0)
    courier.wanted = await store.wanted_releases()
    courier.attached(a)
    await settle()
    with pytest.raises(ProtocolError, match="not offered"):
        courier.handle(b, FetchRelease(version="2.0", offset=0, length=100))
    courier.handle(a, FetchRelease(version="2.0", offset=0, length=1 << 20))
    with pytest.raises(ProtocolError, match="one at a time"):
        courier.handle(a, FetchRelease(version="2.0", offset=0, length=100))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if any(isinstance(m, ReleaseChunk) for m in sent_a):
            break
    [chunk] = [m for m in sent_a if isinstance(m, ReleaseChunk)]
    assert RELEASE[: courier.config.chunk_bytes] == chunk.data
    await courier.stop()


async def test_a_slot_without_an_outcome_times_out_and_frees_the_cluster(tmp_path: Path) -> None:
    courier, store, links = await courier_with(tmp_path, update_timeout_s=0.05)
    (a, _), (b, sent_b) = link("a"), link("b")
    links.update(a=a, b=b)
    await store.set_wanted_release("c", "2.0", 10.0)
    courier.wanted = await store.wanted_releases()
    courier.attached(a)
    await settle()
    await asyncio.sleep(0.1)
    await courier._expire()
    await settle()
    assert "timed_out" == (await store.updates(agent="a"))[0].state
    assert 1 == len(offers(sent_b))
    await courier.stop()
