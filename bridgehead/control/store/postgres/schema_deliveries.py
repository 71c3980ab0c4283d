"""Migration 3: sink deliveries and schedule occurrences handled by one node at a time.

``sink_deliveries.node`` names the node driving a delivery and ``lease_until`` how long its
claim holds unless renewed (``store.deliveries``); ``schedules.claimed_by`` and
``claimed_until`` the node handling the schedule's next occurrence (``store.schedules``).
A lapsed lease or claim may be taken by any node."""

V3 = """
ALTER TABLE sink_deliveries ADD COLUMN node text;
ALTER TABLE sink_deliveries ADD COLUMN lease_until double precision NOT NULL DEFAULT 0;
ALTER TABLE schedules ADD COLUMN claimed_by text;
ALTER TABLE schedules ADD COLUMN claimed_until double precision NOT NULL DEFAULT 0;
"""
