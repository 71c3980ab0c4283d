"""Sinks: where the control plane delivers a job's records (ServiceNow; docs/sinks.md)."""
