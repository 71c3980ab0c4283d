"""The store's byte bounds and tokens, on a real SQLite file: record pages, token revocation."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from bridgehead.control.store.base import CLI, JobRow
from bridgehead.control.store.sqlite import SqliteStore


def page_sizes(tmp_path: Path, sizes: list[list[int]], after: int, limit: int, cap: int | None) -> list[int]:
    """Store batches of records of the given sizes, then read one page: the sizes it holds."""

    async def run() -> list[int]:
        store = SqliteStore(tmp_path / "control.db")
        await store.create_job(JobRow(id="j", plugin="echo", params={}, cluster="default"))
        seq = 1
        for batch in sizes:
            await store.append_records("j", 1, seq, [b"x" * n for n in batch])
            seq += len(batch)
        rows = await store.records("j", 1, after, limit, cap)
        await store.close()
        assert list(range(after + 1, after + 1 + len(rows))) == [s for s, _ in rows]
        return [len(data) for _, data in rows]

    return asyncio.run(run())


def test_a_page_stops_at_its_byte_cap_across_batches(tmp_path: Path) -> None:
    """Records are taken across batches until the next one would pass the cap."""
    assert [40, 40] == page_sizes(tmp_path, [[40], [40, 40, 40]], 0, 100, 100)


def test_a_page_starts_inside_a_batch(tmp_path: Path) -> None:
    """``after`` in the middle of a batch skips the records before it, and their bytes."""
    assert [20, 30] == page_sizes(tmp_path, [[10, 20, 30, 40]], 1, 100, 60)


def test_one_oversized_record_comes_alone(tmp_path: Path) -> None:
    """A record larger than the cap is a page of its own."""
    assert [500] == page_sizes(tmp_path, [[500, 10]], 0, 100, 100)


def test_count_limit_still_holds(tmp_path: Path) -> None:
    """Without a byte cap, the count limit is the bound."""
    assert [1, 1] == page_sizes(tmp_path, [[1, 1, 1]], 0, 2, None)


def test_revoked_token_and_private_files(tmp_path: Path) -> None:
    """A token revoked by its id reads as revoked; the database is 0600 even if it was 0644."""
    (tmp_path / "control.db").touch()
    os.chmod(tmp_path / "control.db", 0o644)

    async def run() -> tuple[float | None, float | None, int]:
        store = SqliteStore(tmp_path / "control.db")
        hashed = "ab" * 32
        await store.add_api_token(hashed, "viewer", "ci", 1.0, 100.0)
        token = await store.revoke_api_token(hashed[:12], 2.0)
        missing = await store.revoke_api_token(hashed[:12], 3.0)
        await store.audit(CLI, "api_token.revoke", {"token": hashed[:12]}, 2.0)
        [entry] = await store.audit_log(0, 10)
        found = await store.api_token(hashed)
        await store.close()
        assert token is not None and found is not None and missing is None
        assert ("cli", "local") == (entry.actor, entry.address)
        return found.revoked_at, found.expires_at, stat.S_IMODE((tmp_path / "control.db").stat().st_mode)

    assert (2.0, 100.0, 0o600) == asyncio.run(run())
