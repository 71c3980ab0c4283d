"""The store contract, releases: one binary per version for good, wanted versions per cluster,
and update reports, newest first, kept across a restart."""

from __future__ import annotations

import asyncio

import pytest
from store_contract import Reopen

from bridgehead.control.store.base import ReleaseConflict, ReleaseRow, Store, UpdateRow

SHA_A = "a" * 64
SHA_B = "b" * 64


def release(version: str, sha256: str = SHA_A, at: float = 1.0) -> ReleaseRow:
    return ReleaseRow(version, 1234, sha256, "c2lnbmF0dXJl", at, "cli")


def report(agent: str, state: str, at: float, version: str = "1.1") -> UpdateRow:
    return UpdateRow(agent, "c", version, state, f"{state} at {at:g}", at)


async def test_a_release_is_kept_and_read_back(store: Store) -> None:
    row = release("1.1")
    assert row == await store.add_release(row)
    assert row == await store.release("1.1")
    assert await store.release("1.2") is None


async def test_the_same_release_again_is_the_kept_row(store: Store) -> None:
    kept = await store.add_release(release("1.1", at=1.0))
    assert kept == await store.add_release(release("1.1", at=2.0))
    assert [kept] == await store.releases()


async def test_a_version_with_other_bytes_is_a_conflict_and_changes_nothing(store: Store) -> None:
    kept = await store.add_release(release("1.1", SHA_A))
    with pytest.raises(ReleaseConflict):
        await store.add_release(release("1.1", SHA_B))
    assert kept == await store.release("1.1")


async def test_a_conflict_does_not_undo_the_writes_beside_it(store: Store) -> None:
    """Writes issued in the same turn as a refused one still happen (SQLite commits them together)."""
    await store.add_release(release("1.1", SHA_A))
    await store.set_wanted_release("c", "1.1", 5.0)
    outcomes = await asyncio.gather(
        store.add_release(release("1.1", SHA_B)), store.add_release(release("1.2")), return_exceptions=True
    )
    assert isinstance(outcomes[0], ReleaseConflict)
    assert release("1.2") == outcomes[1]
    assert {"1.1", "1.2"} == {r.version for r in await store.releases()}


async def test_releases_come_newest_first(store: Store) -> None:
    await store.add_release(release("1.0", at=1.0))
    await store.add_release(release("2.0", at=3.0))
    await store.add_release(release("1.5", at=2.0))
    await store.add_release(release("1.6", at=2.0))
    assert ["2.0", "1.6", "1.5", "1.0"] == [r.version for r in await store.releases()]


async def test_wanted_versions_are_set_replaced_and_cleared_per_cluster(store: Store) -> None:
    assert {} == await store.wanted_releases()
    await store.set_wanted_release("east", "1.1", 10.0)
    await store.set_wanted_release("west", "1.1", 11.0)
    await store.set_wanted_release("east", "1.2", 12.0)
    assert {"east": ("1.2", 12.0), "west": ("1.1", 11.0)} == await store.wanted_releases()
    await store.set_wanted_release("west", None, 13.0)
    await store.set_wanted_release("north", None, 13.0)  # nothing to clear: no error
    assert {"east": ("1.2", 12.0)} == await store.wanted_releases()


async def test_update_reports_come_newest_first_per_agent_and_bounded(store: Store) -> None:
    for row in (report("a1", "downloading", 1.0), report("a2", "downloading", 2.0), report("a1", "restarting", 3.0)):
        await store.record_update(row)
    await store.record_update(report("a1", "committed", 3.0))  # the same instant: last recorded first
    assert ["committed", "restarting", "downloading"] == [u.state for u in await store.updates("a1")]
    assert [report("a1", "committed", 3.0)] == await store.updates("a1", limit=1)
    assert ["a1", "a1", "a2", "a1"] == [u.agent for u in await store.updates()]
    assert [] == await store.updates("nobody")


async def test_releases_wanted_versions_and_reports_survive_a_restart(store: Store, reopen: Reopen) -> None:
    await store.add_release(release("1.1"))
    await store.set_wanted_release("c", "1.1", 5.0)
    await store.record_update(report("a1", "committed", 6.0))
    await store.close()
    again = reopen()
    assert release("1.1") == await again.release("1.1")
    assert {"c": ("1.1", 5.0)} == await again.wanted_releases()
    assert [report("a1", "committed", 6.0)] == await again.updates()


async def test_another_process_sees_a_release_and_a_wanted_version(store: Store, reopen: Reopen) -> None:
    """What the CLI writes beside a running server is read by the server's next poll."""
    cli = reopen()
    await cli.add_release(release("1.1"))
    await cli.set_wanted_release("c", "1.1", 5.0)
    assert release("1.1") == await store.release("1.1")
    assert {"c": ("1.1", 5.0)} == await store.wanted_releases()
