"""The PostgreSQL store's records, kept as the batches they arrive in (one row per records
message), as the SQLite store keeps them (``store.sqlite.records``): ``sizes`` holds each
record's length, ``data`` their concatenation, and a page reads only the slices it takes."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Sequence

import asyncpg

from bridgehead.control.store.postgres.writer import GroupCommit
from bridgehead.control.store.sqlite.records import pack_sizes, unpack_sizes


class RecordTables(GroupCommit):
    node_id: str

    def append_records(self, job_id: str, attempt: int, first_seq: int, records: Sequence[bytes]) -> Awaitable[bool]:
        last_seq = first_seq + len(records) - 1
        sizes = pack_sizes([len(data) for data in records])
        data = b"".join(records)

        async def op(db: asyncpg.Connection) -> bool:
            # The dispatcher passes only records past the attempt's acked_seq, so batches never
            # overlap; DO NOTHING keeps a replayed one (same last_seq) from failing the commit.
            # A stale attempt's batch lands under that attempt, where nothing reads it, and
            # moves no acked_seq (fencing), as in SQLite.
            # Fenced by the node too: a batch still buffered on a node that lost the attempt
            # to another (its agent moved) must not land beside the batches the other stores.
            await db.execute(
                "INSERT INTO record_batches (job_id, attempt, last_seq, first_seq, sizes, data) "
                "SELECT $1::text, $2::integer, $3::bigint, $4::bigint, $5::bytea, $6::bytea "
                "WHERE EXISTS (SELECT 1 FROM jobs WHERE id=$1 AND attempt=$2 AND node=$7 AND state='running') "
                "ON CONFLICT DO NOTHING",
                job_id,
                attempt,
                last_seq,
                first_seq,
                sizes,
                data,
                self.node_id,
            )
            held = await db.fetchval(
                "UPDATE jobs SET acked_seq=greatest(acked_seq, $1) WHERE id=$2 AND attempt=$3 AND node=$4 RETURNING 1",
                last_seq,
                job_id,
                attempt,
                self.node_id,
            )
            return held is not None  # False: fenced out, so no ack may follow

        return self._write(op, quiet=True)

    async def records(
        self, job_id: str, attempt: int, after: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        if limit <= 0:
            return []
        cap = max_bytes if max_bytes is not None else sys.maxsize
        pool = await self._reads()
        # The sizes first, without the data (each batch holds at least one record, so at most
        # ``limit`` batches); then only the slice of each batch that the page takes.
        batches = await pool.fetch(
            "SELECT last_seq, first_seq, sizes FROM record_batches WHERE job_id=$1 AND attempt=$2 AND last_seq>$3 "
            "ORDER BY last_seq LIMIT $4",
            job_id,
            attempt,
            after,
            limit,
        )
        plan: list[tuple[int, int, list[tuple[int, int]]]] = []  # (last_seq, start, [(seq, size)])
        count = total = 0
        full = False
        for last_seq, first_seq, sizes in batches:
            offset = start = 0
            taken: list[tuple[int, int]] = []
            for seq, size in enumerate(unpack_sizes(sizes), first_seq):
                if seq <= after:
                    offset += size
                    start = offset
                    continue
                if count >= limit or (total + size > cap and count):
                    full = True
                    break
                taken.append((seq, size))
                count += 1
                total += size
            if taken:
                plan.append((last_seq, start, taken))
            if full or count >= limit:
                break
        if not plan:
            return []
        rows = await pool.fetch(
            "SELECT b.last_seq, substring(b.data FROM p.start + 1 FOR p.length) FROM record_batches b "
            "JOIN unnest($3::bigint[], $4::int[], $5::int[]) AS p(last_seq, start, length) "
            "ON b.last_seq = p.last_seq WHERE b.job_id=$1 AND b.attempt=$2",
            job_id,
            attempt,
            [p[0] for p in plan],
            [p[1] for p in plan],
            [sum(size for _seq, size in p[2]) for p in plan],
        )
        slices = {row[0]: bytes(row[1]) for row in rows}
        out: list[tuple[int, bytes]] = []
        for last_seq, _start, taken in plan:
            data = slices[last_seq]
            position = 0
            for seq, size in taken:
                out.append((seq, data[position : position + size]))
                position += size
        return out
