"""Migration 2: several nodes. ``nodes`` holds each node's heartbeat; ``jobs.node`` names the
node that holds a running attempt (its agent's session is there), and every write about that
attempt is fenced by it; ``jobs.not_before`` holds a retried job back for its backoff."""

V2 = """
CREATE TABLE nodes (
    id text COLLATE "C" PRIMARY KEY,
    url text NOT NULL DEFAULT '',
    version text NOT NULL DEFAULT '',
    started_at double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    agents integer NOT NULL DEFAULT 0,
    stopped_at double precision
);
ALTER TABLE jobs ADD COLUMN node text;
-- The node an agent's session is on (NULL once it ended there), for /api/v1/agents on any node.
ALTER TABLE agents ADD COLUMN node text;
-- A retried job waits out its backoff: no node claims it before (wall clock, seconds).
ALTER TABLE jobs ADD COLUMN not_before double precision;
CREATE INDEX jobs_running_on ON jobs (node) WHERE state = 'running';
CREATE INDEX jobs_running_agent ON jobs (agent) WHERE state = 'running';
CREATE INDEX jobs_queued ON jobs (cluster, queue_seq) WHERE state = 'queued';
"""
