"""The PostgreSQL store's part for several nodes (``store.nodes``): claims, adoption, take-over
and heartbeats. Times of heartbeats are the database's clock (``clock_timestamp()``)."""

from __future__ import annotations

from collections.abc import Awaitable, Collection
from typing import Any

import asyncpg

from bridgehead.control.store.nodes import NodeRow, NodeStore
from bridgehead.control.store.postgres.writer import GroupCommit
from bridgehead.control.store.rows import JobRow
from bridgehead.control.store.sql_rows import JOB_COLUMNS, job_row

_JOB_COLUMNS = ", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(","))
# The inner SELECT is served by the partial index jobs_queued; SKIP LOCKED passes over rows
# another node's claim holds, so nodes never wait on each other here.
CLAIM = (
    "UPDATE jobs j SET state='running', attempt=j.attempt + 1, agent=$3, node=$4, accepted=false, "  # noqa: S608
    "safe_to_repeat=false, acked_seq=0, record_count=0, started_at=$5, not_before=NULL "
    "FROM (SELECT id FROM jobs WHERE state='queued' AND cluster=$1 AND plugin = ANY($2::text[]) "
    "AND (not_before IS NULL OR not_before <= $5) ORDER BY queue_seq LIMIT $6 "
    f"FOR UPDATE SKIP LOCKED) picked WHERE j.id = picked.id RETURNING {_JOB_COLUMNS}"
)


class NodeTables(GroupCommit, NodeStore):
    node_id: str

    def claim_jobs(
        self, cluster: str, plugins: Collection[str], agent: str, limit: int, now: float
    ) -> Awaitable[list[JobRow]]:
        names = sorted(plugins)

        async def op(db: asyncpg.Connection) -> list[JobRow]:
            rows = await db.fetch(
                CLAIM,
                cluster,
                names,
                agent,
                self.node_id,
                now,
                limit,
            )
            claimed = [job_row(r) for r in rows]
            claimed.sort(key=lambda job: job.queue_seq)
            # Earlier attempts' records go, as start_attempt drops them.
            retried = [(job.id, job.attempt) for job in claimed if job.attempt > 1]
            if retried:
                await db.execute(
                    "DELETE FROM record_batches b USING unnest($1::text[], $2::int[]) AS r(id, attempt) "
                    "WHERE b.job_id = r.id AND b.attempt < r.attempt",
                    [r[0] for r in retried],
                    [r[1] for r in retried],
                )
            return claimed

        return self._write(op, quiet=True)

    def adopt_agent_attempts(self, agent: str) -> Awaitable[list[JobRow]]:
        async def op(db: asyncpg.Connection) -> list[JobRow]:
            rows = await db.fetch(
                f"UPDATE jobs SET node=$2 WHERE agent=$1 AND state='running' RETURNING {JOB_COLUMNS}",  # noqa: S608
                agent,
                self.node_id,
            )
            return [job_row(r) for r in rows]

        return self._write(op, signal=f"a:{agent}")

    def take_over_node(self, node: str) -> Awaitable[list[JobRow]]:
        async def op(db: asyncpg.Connection) -> list[JobRow]:
            rows = await db.fetch(
                f"UPDATE jobs SET node=$2 WHERE node=$1 AND state='running' RETURNING {JOB_COLUMNS}",  # noqa: S608
                node,
                self.node_id,
            )
            if node != self.node_id:
                await db.execute(
                    "UPDATE nodes SET stopped_at=coalesce(stopped_at, extract(epoch FROM clock_timestamp())) "
                    "WHERE id=$1",
                    node,
                )
            return [job_row(r) for r in rows]

        return self._write(op)

    def heartbeat(self, url: str, version: str, started_at: float, agents: int) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute(
                "INSERT INTO nodes (id, url, version, started_at, heartbeat_at, agents) "
                "VALUES ($1, $2, $3, $4, extract(epoch FROM clock_timestamp()), $5) ON CONFLICT (id) DO UPDATE "
                "SET url=$2, version=$3, started_at=$4, heartbeat_at=extract(epoch FROM clock_timestamp()), "
                "agents=$5, stopped_at=NULL",
                self.node_id,
                url,
                version,
                started_at,
                agents,
            )

        return self._write(op, quiet=True)

    def node_stopped(self) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute(
                "UPDATE nodes SET stopped_at=extract(epoch FROM clock_timestamp()), agents=0 WHERE id=$1", self.node_id
            )

        return self._write(op, signal="q:")

    async def list_nodes(self) -> list[NodeRow]:
        rows = await (await self._reads()).fetch(
            "SELECT n.id, n.url, n.version, n.started_at, n.heartbeat_at, n.agents, "
            "(SELECT count(*) FROM jobs j WHERE j.node = n.id AND j.state = 'running'), n.stopped_at, "
            "extract(epoch FROM clock_timestamp()) - n.heartbeat_at FROM nodes n ORDER BY n.id"
        )
        return [
            NodeRow(
                id=row[0],
                url=row[1],
                version=row[2],
                started_at=row[3],
                heartbeat_at=row[4],
                agents=row[5],
                running=row[6],
                stopped_at=row[7],
                silent_s=max(0.0, float(row[8])),
            )
            for row in rows
        ]

    def agent_left(self, agent: str) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute("UPDATE agents SET node=NULL WHERE name=$1 AND node=$2", agent, self.node_id)

        return self._write(op, quiet=True)

    async def agents_elsewhere(self, dead_after_s: float) -> dict[str, str]:
        rows = await (await self._reads()).fetch(
            "SELECT a.name, a.node FROM agents a JOIN nodes n ON n.id = a.node WHERE a.node <> $1 "
            "AND n.stopped_at IS NULL AND n.heartbeat_at >= extract(epoch FROM clock_timestamp()) - $2",
            self.node_id,
            dead_after_s,
        )
        return {row[0]: row[1] for row in rows}

    async def queued_jobs(self) -> int:
        return int(await (await self._reads()).fetchval("SELECT count(*) FROM jobs WHERE state = 'queued'"))

    async def forget_nodes(self, stopped_before_s: float) -> int:
        deleted = await (await self._reads()).fetch(
            "DELETE FROM nodes n WHERE stopped_at < extract(epoch FROM clock_timestamp()) - $1 "
            "AND NOT EXISTS (SELECT 1 FROM jobs WHERE node = n.id AND state = 'running') RETURNING 1",
            stopped_before_s,
        )
        return len(deleted)
