"""Prometheus metrics of the control plane (served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, node: str = "") -> None:
        """``node``: this node's name, in ``bridgehead_node_info`` (each node serves its own)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.node_info = Gauge("bridgehead_node_info", "This control-plane node (always 1)", ["node"], registry=r)
        self.node_info.labels(node).set(1)
        self.jobs_submitted = Counter("bridgehead_jobs_submitted", "Jobs accepted by the API", registry=r)
        self.jobs_finished = Counter(
            "bridgehead_jobs_finished", "Jobs that reached a final state", ["state"], registry=r
        )
        self.records_received = Counter("bridgehead_records_received", "Records persisted from agents", registry=r)
        self.attempts_lost = Counter(
            "bridgehead_attempts_lost", "Attempts whose agent was lost or restarted", registry=r
        )
        self.protocol_errors = Counter(
            "bridgehead_protocol_errors", "Agent connections closed for a protocol error", ["code"], registry=r
        )
        self.agents_connected = Gauge("bridgehead_agents_connected", "Agents with a live session", registry=r)
        self.jobs_queued = Gauge("bridgehead_jobs_queued", "Jobs waiting for an agent", registry=r)
        self.jobs_running = Gauge("bridgehead_jobs_running", "Attempts running on agents", registry=r)
        self.job_duration = Histogram(
            "bridgehead_job_duration_seconds",
            "From dispatch of the final attempt to its end",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600, 3600),
            registry=r,
        )
        # ServiceNow sinks (docs/sinks.md), per instance.
        self.sink_records = Counter(
            "bridgehead_sink_records",
            "Records delivered, by the instance's outcome (inserted, updated, ignored, skipped, error)",
            ["instance", "outcome"],
            registry=r,
        )
        self.sink_responses = Counter(
            "bridgehead_sink_responses",
            "HTTP answers from instances by status ('error' for a timeout or dropped connection)",
            ["instance", "status"],
            registry=r,
        )
        self.sink_deliveries = Counter(
            "bridgehead_sink_deliveries", "Deliveries that ended, done or failed", ["instance", "state"], registry=r
        )
        self.sink_delivering = Gauge("bridgehead_sink_delivering", "Deliveries in progress", registry=r)
