"""Sync state: kept with the job that made it, never overwritten by a run that started from an
older one; identities and change stamps per directory kind; the wire and journal forms."""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path

import msgspec
import pytest

from bridgehead.agent.journal import Journal
from bridgehead.control.store.base import JobRow
from bridgehead.control.store.sqlite import SqliteStore
from bridgehead.plugins.ldap.sync import ACTIVE_DIRECTORY, GENERIC, OPENLDAP, scheme_for
from bridgehead.protocol import Complete, SyncState, decode_agent_frame, encode

IDS = b"".join(sorted(uuid.uuid4().bytes for _ in range(3)))


def state(version: int, watermark: str) -> SyncState:
    return SyncState(name="people", version=version, watermark=watermark)


async def running(store: SqliteStore, job_id: str) -> None:
    """A job on its first attempt (only the current attempt's end keeps its sync state)."""
    await store.insert_job(JobRow(id=job_id, plugin="ldap", params={}, cluster="c"))
    await store.start_attempt(job_id, 1, "agent", 0.0)


async def test_state_is_kept_only_from_the_version_it_started_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(tmp_path / "store.db")
    try:
        for job_id in ("j1", "j2", "j3", "j4"):
            await running(store, job_id)
        assert await store.sync_state("people") is None
        first = SyncState(name="people", version=0, watermark="w1", ids=IDS)
        await store.finish_job("j1", 1, "succeeded", None, None, 3, 1.0, first)
        assert SyncState(name="people", version=1, watermark="w1", ids=IDS) == await store.sync_state("people")
        # Two runs started from version 1; the first to finish wins, the other is not kept.
        await store.finish_job(
            "j2", 1, "succeeded", None, None, 0, 2.0, SyncState(name="people", version=1, watermark="w2")
        )
        with caplog.at_level(logging.WARNING):
            await store.finish_job(
                "j3", 1, "succeeded", None, None, 0, 3.0, SyncState(name="people", version=1, watermark="w3")
            )
        kept = await store.sync_state("people")
        assert kept is not None
        assert ("w2", 2) == (kept.watermark, kept.version)
        assert any("another run has replaced" in r.getMessage() for r in caplog.records)
        # A failed job's state is never kept.
        await store.finish_job("j4", 1, "failed", "x", "y", 0, 4.0, SyncState(name="people", version=2, watermark="w4"))
        assert "w2" == getattr(await store.sync_state("people"), "watermark", None)
        (summary,) = await store.sync_states()
        assert ("people", 2, "w2", 0, "j2") == (
            summary.name,
            summary.version,
            summary.watermark,
            summary.identities,
            summary.job_id,
        )
        await store.delete_sync_state("people")
        assert await store.sync_state("people") is None
    finally:
        await store.close()


def test_state_travels_in_the_completion_as_base64() -> None:
    complete = Complete(
        job_id="j", attempt=1, status="succeeded", record_count=2, sync_state=SyncState(name="s", ids=IDS)
    )
    wire = encode(complete)
    assert msgspec.json.decode(wire)["sync_state"]["ids"] == base64.b64encode(IDS).decode()
    (decoded,) = decode_agent_frame(wire, 1 << 20)
    assert complete == decoded


def test_journal_keeps_the_state_of_a_finished_job(tmp_path: Path) -> None:
    """A job finished before a restart re-sends its completion with its state."""
    journal = Journal(tmp_path / "journal.db")
    journal.add_job("j", 1, "ldap", 1.0)
    journal.finish_job("j", 1, "succeeded", None, 1, [], SyncState(name="s", version=4, ids=IDS))
    journal.close()
    (job,) = Journal(tmp_path / "journal.db").jobs()
    assert SyncState(name="s", version=4, ids=IDS) == job.sync_state


def test_identity_and_stamp_per_directory() -> None:
    assert ACTIVE_DIRECTORY == scheme_for({"objectguid", "usnchanged", "entryuuid", "entrycsn"})
    assert OPENLDAP == scheme_for({"entryuuid", "entrycsn", "modifytimestamp"})
    assert GENERIC == scheme_for({"entryuuid", "modifytimestamp"})
    guid = uuid.UUID("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
    assert guid.bytes_le == ACTIVE_DIRECTORY.id_bytes(guid.bytes_le)
    assert "3f2504e0-4f89-11d3-9a0c-0305e82c3301" == ACTIVE_DIRECTORY.id_text(guid.bytes_le)
    assert guid.bytes == OPENLDAP.id_bytes(str(guid).encode())
    assert OPENLDAP.id_bytes(b"not a uuid") is None
    # USNs compare as numbers, CSNs and timestamps as text (fixed-width).
    assert ACTIVE_DIRECTORY.later("10000", "9999")
    assert not ACTIVE_DIRECTORY.later("10000", "10000")
    assert OPENLDAP.later("20261123170038.000002Z#000000#000#000000", "20261123170038.000001Z#000000#000#000000")
    assert OPENLDAP.later("x", None)
