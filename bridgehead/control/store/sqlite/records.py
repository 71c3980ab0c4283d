"""The SQLite store's records, kept as the batches they arrive in (one row per records message).

A row per record cost ~3 us of index upkeep each, the most expensive step of a million-row
query. ``sizes`` holds each record's length (uint32 little-endian); ``data`` their
concatenation; a page reads only the slice of each batch it takes (blob I/O).
"""

from __future__ import annotations

import array
import sys
from collections.abc import Awaitable, Sequence

from bridgehead.control.store.sqlite.writer import GroupCommit


def pack_sizes(sizes: Sequence[int]) -> bytes:
    packed = array.array("I", sizes)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_sizes(blob: bytes) -> array.array[int]:
    sizes = array.array("I")
    sizes.frombytes(blob)
    if sys.byteorder == "big":
        sizes.byteswap()
    return sizes


class RecordTables(GroupCommit):
    def append_records(self, job_id: str, attempt: int, first_seq: int, records: Sequence[bytes]) -> Awaitable[None]:
        last_seq = first_seq + len(records) - 1
        sizes = pack_sizes([len(data) for data in records])
        data = b"".join(records)

        def op() -> None:
            # The dispatcher passes only records past the attempt's acked_seq, so batches never
            # overlap; OR IGNORE keeps a replayed one (same last_seq) from failing the commit.
            self.db.execute(
                "INSERT OR IGNORE INTO record_batches (job_id, attempt, last_seq, first_seq, sizes, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, attempt, last_seq, first_seq, sizes, data),
            )
            self.db.execute(
                "UPDATE jobs SET acked_seq=MAX(acked_seq, ?) WHERE id=? AND attempt=?",
                (last_seq, job_id, attempt),
            )

        return self._write(op)

    async def records(
        self, job_id: str, attempt: int, after: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        cap = max_bytes if max_bytes is not None else sys.maxsize
        out: list[tuple[int, bytes]] = []
        total = 0
        # The sizes come first, without the data; then only the slice of each batch that the
        # page takes is read (blob I/O), so a page never costs more memory than itself.
        cursor = self.db.execute(
            "SELECT rowid, first_seq, sizes FROM record_batches WHERE job_id=? AND attempt=? AND last_seq>? "
            "ORDER BY last_seq",
            (job_id, attempt, after),
        )
        try:
            for rowid, first_seq, sizes in cursor:
                offset = start = 0
                taken: list[tuple[int, int]] = []
                full = False
                for seq, size in enumerate(unpack_sizes(sizes), first_seq):
                    if seq <= after:
                        offset += size
                        start = offset
                        continue
                    if len(out) + len(taken) >= limit or (total + size > cap and (out or taken)):
                        full = True
                        break
                    taken.append((seq, size))
                    total += size
                    offset += size
                if taken:
                    with self.db.blobopen("record_batches", "data", rowid, readonly=True) as blob:
                        blob.seek(start)
                        data = blob.read(offset - start)
                    position = 0
                    for seq, size in taken:
                        out.append((seq, data[position : position + size]))
                        position += size
                if full or len(out) >= limit:
                    break
        finally:
            cursor.close()
        return out
