"""The PostgreSQL server the tests use: the local one (scripts/test starts it), or another
named by ``BRIDGEHEAD_TEST_POSTGRES``. A test that needs it and cannot reach it fails."""

from __future__ import annotations

import os

import asyncpg
import pytest

POSTGRES_URL = os.environ.get("BRIDGEHEAD_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")


async def postgres_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(POSTGRES_URL, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(f"this test needs PostgreSQL at {POSTGRES_URL} (BRIDGEHEAD_TEST_POSTGRES): {exc}")
