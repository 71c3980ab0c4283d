"""The SQLite store's API tokens (kept as hashes) and audit log."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable
from typing import Any

import msgspec

from bridgehead.control.store.access import TOKEN_ID_CHARS
from bridgehead.control.store.rows import Actor, ApiTokenRow, AuditRow, json_size
from bridgehead.control.store.sqlite.writer import GroupCommit

# A token's public id: the start of its hash (TOKEN_ID_CHARS).
_TOKEN_COLUMNS = "substr(token_hash, 1, 12), name, role, created_at, expires_at, last_used_at, revoked_at"  # noqa: S105 - column names
_encode_json = msgspec.json.Encoder().encode
_AUDIT_SQL = "INSERT INTO audit (at, actor, actor_name, address, action, detail) VALUES (?, ?, ?, ?, ?, ?)"


def audit_now(db: sqlite3.Connection, actor: Actor, action: str, detail: dict[str, Any], now: float) -> None:
    """Append to the audit log inside the running transaction (enrolment and revocation audit
    themselves in the commit that makes the change)."""
    text = _encode_json(detail).decode()  # msgspec: a job submit's entry costs a few microseconds
    db.execute(_AUDIT_SQL, (now, actor.id, actor.name, actor.address, action, text))


class AccessTables(GroupCommit):
    def add_api_token(
        self, token_hash: str, role: str, name: str, now: float, expires_at: float | None = None
    ) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "INSERT INTO api_tokens (token_hash, role, name, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (token_hash, role, name, now, expires_at),
            )
        )

    async def api_token(self, token_hash: str) -> ApiTokenRow | None:
        row = self.db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash=?",  # noqa: S608 - fixed column list
            (token_hash,),
        ).fetchone()
        return ApiTokenRow(*row) if row else None

    async def api_tokens(self) -> list[ApiTokenRow]:
        rows = self.db.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at").fetchall()  # noqa: S608
        return [ApiTokenRow(*row) for row in rows]

    async def revoke_api_token(self, token_id: str, now: float) -> ApiTokenRow | None:
        if len(token_id) != TOKEN_ID_CHARS:
            return None

        def op() -> ApiTokenRow | None:
            # The id is a prefix of the hash: a range over the primary key finds it.
            row = self.db.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash >= ? AND token_hash < ? "  # noqa: S608
                "AND revoked_at IS NULL",
                (token_id, token_id + "g"),
            ).fetchone()
            if row is None:
                return None
            self.db.execute(
                "UPDATE api_tokens SET revoked_at=? WHERE token_hash >= ? AND token_hash < ? AND revoked_at IS NULL",
                (now, token_id, token_id + "g"),
            )
            token = ApiTokenRow(*row)
            token.revoked_at = now
            return token

        return await self._write(op)

    def api_token_used(self, token_id: str, now: float) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "UPDATE api_tokens SET last_used_at=? WHERE token_hash >= ? AND token_hash < ?",
                (now, token_id, token_id + "g"),
            )
        )

    def external_changes(self) -> int:
        # Changes when another connection (another process) commits; never for our own writes.
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def audit(self, actor: Actor, action: str, detail: dict[str, Any], now: float) -> Awaitable[Any]:
        return self._write(lambda: audit_now(self.db, actor, action, detail, now))

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
        where: list[str] = ["id > ?"]
        args: list[Any] = [after]
        if actor is not None:
            where.append("(actor = ? OR actor_name = ?)")
            args += [actor, actor]
        if action is not None:
            where.append("action = ?")
            args.append(action)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if until is not None:
            where.append("at < ?")
            args.append(until)
        cursor = self.db.execute(
            "SELECT id, at, actor, actor_name, address, action, detail FROM audit WHERE "  # noqa: S608 - fixed fragments
            + " AND ".join(where)
            + " ORDER BY id LIMIT ?",
            (*args, limit),
        )
        out: list[AuditRow] = []
        size = 0
        for r in cursor:  # a schedule's entry holds its job template: stop at max_bytes
            out.append(AuditRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])))
            size += json_size(out[-1].detail)
            if max_bytes is not None and size >= max_bytes:
                cursor.close()
                break
        return out
