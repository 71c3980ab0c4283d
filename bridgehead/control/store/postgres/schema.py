"""The PostgreSQL store's tables, as numbered migrations run on start.

``schema_version`` holds one row per migration applied. On start, under a transaction-level
advisory lock (two nodes starting at once migrate once), the store reads the highest version,
refuses a database newer than ``LATEST`` (``SchemaTooNew``), and applies the missing
migrations, each in that one transaction.

Several nodes share one database (``store.nodes``): a node claims queued jobs with ``SELECT
... WHERE cluster=$1 AND state='queued' ORDER BY queue_seq FOR UPDATE SKIP LOCKED LIMIT n``
(migration 2), deliveries and schedule occurrences under leases (migration 3); migration 4
holds the control plane's identity.
"""

from __future__ import annotations

import asyncpg

from bridgehead.control.store.postgres.schema_deliveries import V3
from bridgehead.control.store.postgres.schema_identity import V4
from bridgehead.control.store.postgres.schema_nodes import V2
from bridgehead.control.store.versions import SchemaTooNew

# A job's queue position comes from this sequence in blocks of QUEUE_BLOCK: a node reserves
# one at start (and the next ahead of need), so ``insert_job`` numbers a job without a round trip.
QUEUE_BLOCK = 1 << 20

# Text that is paged or ranged by its order is COLLATE "C" (bytewise, as SQLite compares):
# names page the same on both backends whatever the database's locale.
V1 = f"""
CREATE SEQUENCE job_queue_blocks INCREMENT BY {QUEUE_BLOCK} START WITH 1;
CREATE TABLE jobs (
    id text PRIMARY KEY,
    queue_seq bigint NOT NULL,
    plugin text NOT NULL,
    params text NOT NULL,
    cluster text NOT NULL,
    state text NOT NULL,
    attempt integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    timeout_s double precision NOT NULL,
    idempotency_key text UNIQUE,
    sink text,
    agent text,
    accepted boolean NOT NULL DEFAULT false,
    safe_to_repeat boolean NOT NULL DEFAULT false,
    cancel_requested boolean NOT NULL DEFAULT false,
    error_code text,
    error_message text,
    acked_seq bigint NOT NULL DEFAULT 0,
    record_count bigint NOT NULL DEFAULT 0,
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision
);
CREATE INDEX jobs_state ON jobs (state, queue_seq);
CREATE INDEX jobs_claim ON jobs (cluster, state, queue_seq);
CREATE INDEX jobs_order ON jobs (queue_seq);
-- Records as the batches they arrive in (one row per records message), as in SQLite: sizes
-- (uint32 little-endian each) and their concatenation; a page reads only the slices it takes.
CREATE TABLE record_batches (
    job_id text NOT NULL,
    attempt integer NOT NULL,
    last_seq bigint NOT NULL,
    first_seq bigint NOT NULL,
    sizes bytea NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (job_id, attempt, last_seq)
);
CREATE TABLE sync_states (
    name text COLLATE "C" PRIMARY KEY,
    version integer NOT NULL,
    watermark text,
    ids bytea NOT NULL,
    job_id text NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE agents (
    name text COLLATE "C" PRIMARY KEY,
    cluster text NOT NULL,
    agent_id text NOT NULL,
    public_key text NOT NULL,
    enrolled_at double precision NOT NULL,
    last_seen double precision,
    version text NOT NULL DEFAULT '',
    plugins text NOT NULL DEFAULT '[]',
    connections text NOT NULL DEFAULT '[]',
    cert_expires_at double precision,
    revoked_at double precision
);
CREATE TABLE api_tokens (
    token_hash text COLLATE "C" PRIMARY KEY,
    role text NOT NULL,
    name text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision,
    last_used_at double precision,
    revoked_at double precision,
    seq bigserial NOT NULL
);
CREATE TABLE enrollment_tokens (
    token_hash text PRIMARY KEY,
    cluster text NOT NULL,
    expires_at double precision NOT NULL,
    created_at double precision NOT NULL,
    used_at double precision,
    used_by text,
    uses_left integer NOT NULL DEFAULT 1,
    replace_name text
);
CREATE TABLE audit (
    id bigserial PRIMARY KEY,
    at double precision NOT NULL,
    actor text NOT NULL,
    actor_name text NOT NULL DEFAULT '',
    address text NOT NULL DEFAULT '',
    action text NOT NULL,
    detail text NOT NULL
);
CREATE TABLE schedules (
    name text COLLATE "C" PRIMARY KEY,
    cron text NOT NULL,
    timezone text NOT NULL,
    job text NOT NULL,
    enabled boolean NOT NULL,
    next_run_at double precision,
    last_run_at double precision,
    last_job_id text,
    runs integer NOT NULL DEFAULT 0,
    skipped_overlaps integer NOT NULL DEFAULT 0,
    last_error_code text,
    last_error_message text,
    created_at double precision NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;
CREATE TABLE sink_deliveries (
    job_id text PRIMARY KEY,
    seq bigserial NOT NULL,
    instance text NOT NULL,
    state text NOT NULL,
    batch_size integer NOT NULL,
    total bigint NOT NULL,
    error_code text,
    error_message text,
    started_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    finished_at double precision
);
CREATE INDEX sink_deliveries_state ON sink_deliveries (state, seq);
CREATE TABLE sink_batches (
    job_id text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    inserted integer NOT NULL,
    updated integer NOT NULL,
    ignored integer NOT NULL,
    skipped integer NOT NULL,
    errors integer NOT NULL,
    PRIMARY KEY (job_id, first_seq)
);
CREATE TABLE sink_errors (
    job_id text NOT NULL,
    seq bigint NOT NULL,
    status text NOT NULL,
    message text NOT NULL,
    record text NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE oauth_tokens (
    instance text PRIMARY KEY,
    refresh_token text NOT NULL,
    origin text NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE releases (
    version text PRIMARY KEY,
    seq bigserial NOT NULL,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    signature text NOT NULL,
    uploaded_at double precision NOT NULL,
    uploaded_by text NOT NULL
);
CREATE TABLE wanted_releases (
    cluster text COLLATE "C" PRIMARY KEY,
    version text NOT NULL,
    set_at double precision NOT NULL
);
CREATE TABLE agent_updates (
    id bigserial PRIMARY KEY,
    agent text NOT NULL,
    cluster text NOT NULL,
    version text NOT NULL,
    state text NOT NULL,
    message text NOT NULL,
    at double precision NOT NULL
);
CREATE INDEX agent_updates_by_agent ON agent_updates (agent, at);
"""

# Version N is MIGRATIONS[N - 1]; append, never edit one that has shipped.
# V2 and later live in modules of their own (schema_*.py), one per capability.
MIGRATIONS: tuple[str, ...] = (V1, V2, V3, V4)
LATEST = len(MIGRATIONS)


async def migrate(conn: asyncpg.Connection, where: str) -> int:
    """Bring the database (the connection's schema) to ``LATEST``; the version it was at.
    ``where`` names the database in errors (its URL, without a password)."""
    async with conn.transaction():
        # One node migrates at a time; the others wait here, then find nothing to do.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.bridgehead_schema'))")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, applied_at timestamptz "
            "NOT NULL DEFAULT now())"
        )
        found = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        if found > LATEST:
            raise SchemaTooNew(where, found, LATEST)
        for version in range(found + 1, LATEST + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        return found
