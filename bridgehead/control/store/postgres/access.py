"""The PostgreSQL store's API tokens (kept as hashes) and audit log."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

import asyncpg
import msgspec

from bridgehead.control.store.access import TOKEN_ID_CHARS
from bridgehead.control.store.postgres.writer import GroupCommit
from bridgehead.control.store.rows import Actor, ApiTokenRow, AuditRow, json_size

# A token's public id: the start of its hash (TOKEN_ID_CHARS); found by a range over the key.
_TOKEN_COLUMNS = "left(token_hash, 12), name, role, created_at, expires_at, last_used_at, revoked_at"  # noqa: S105 - column names
_BY_ID = "token_hash >= $1 AND token_hash < $1 || 'g'"
_encode_json = msgspec.json.Encoder().encode


async def audit_now(db: asyncpg.Connection, actor: Actor, action: str, detail: dict[str, Any], now: float) -> None:
    """Append to the audit log inside the running transaction (enrolment and revocation audit
    themselves in the commit that makes the change); ids grow in commit order."""
    await db.execute(
        "INSERT INTO audit (at, actor, actor_name, address, action, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        now,
        actor.id,
        actor.name,
        actor.address,
        action,
        _encode_json(detail).decode(),
    )


class AccessTables(GroupCommit):
    def add_api_token(
        self, token_hash: str, role: str, name: str, now: float, expires_at: float | None = None
    ) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            # No ON CONFLICT: a hash kept already fails the write (the contract says so).
            await db.execute(
                "INSERT INTO api_tokens (token_hash, role, name, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                token_hash,
                role,
                name,
                now,
                expires_at,
            )

        return self._write(op)

    async def api_token(self, token_hash: str) -> ApiTokenRow | None:
        row = await (await self._reads()).fetchrow(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash=$1",  # noqa: S608 - fixed column list
            token_hash,
        )
        return ApiTokenRow(*row) if row else None

    async def api_tokens(self) -> list[ApiTokenRow]:
        rows = await (await self._reads()).fetch(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, seq"  # noqa: S608 - fixed column list
        )
        return [ApiTokenRow(*row) for row in rows]

    async def revoke_api_token(self, token_id: str, now: float) -> ApiTokenRow | None:
        if len(token_id) != TOKEN_ID_CHARS:
            return None

        async def op(db: asyncpg.Connection) -> asyncpg.Record | None:
            return await db.fetchrow(
                f"UPDATE api_tokens SET revoked_at=$2 WHERE {_BY_ID} AND revoked_at IS NULL "  # noqa: S608 - fixed parts
                f"RETURNING {_TOKEN_COLUMNS}",
                token_id,
                now,
            )

        row = await self._write(op)
        return ApiTokenRow(*row) if row else None

    def api_token_used(self, token_id: str, now: float) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute(f"UPDATE api_tokens SET last_used_at=$2 WHERE {_BY_ID}", token_id, now)  # noqa: S608

        return self._write(op)

    def audit(self, actor: Actor, action: str, detail: dict[str, Any], now: float) -> Awaitable[Any]:
        return self._write(lambda db: audit_now(db, actor, action, detail, now), quiet=True)

    async def audit_log(
        self,
        after: int,
        limit: int,
        actor: str | None = None,
        action: str | None = None,
        since: float | None = None,
        until: float | None = None,
        max_bytes: int | None = None,
    ) -> list[AuditRow]:
        args: list[Any] = [after]
        where = ["id > $1"]
        if actor is not None:
            args.append(actor)
            where.append(f"(actor = ${len(args)} OR actor_name = ${len(args)})")
        if action is not None:
            args.append(action)
            where.append(f"action = ${len(args)}")
        if since is not None:
            args.append(since)
            where.append(f"at >= ${len(args)}")
        if until is not None:
            args.append(until)
            where.append(f"at < ${len(args)}")
        args.append(max(limit, 0))
        sql = (
            "SELECT id, at, actor, actor_name, address, action, detail FROM audit WHERE "  # noqa: S608 - fixed fragments
            + " AND ".join(where)
            + f" ORDER BY id LIMIT ${len(args)}"
        )
        out: list[AuditRow] = []
        size = 0
        async with (await self._reads()).acquire() as db, db.transaction():
            # A cursor: a schedule's entry holds its job template, so a page stops at max_bytes.
            async for r in db.cursor(sql, *args, prefetch=min(max(limit, 1), 50)):
                out.append(AuditRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])))
                size += json_size(out[-1].detail)
                if max_bytes is not None and size >= max_bytes:
                    break
        return out
