"""The shared store: PostgreSQL, for control planes that outgrow one node's SQLite file.

store.py      PostgresStore: the table classes below over the connections of writer.py
writer.py     connections and the group-commit engine (one write connection, a read pool, a listener)
schema.py     the tables as numbered migrations, run on start (a newer schema is refused)
jobs.py, records.py, syncs.py, agents.py, access.py, schedules.py, sinks.py, releases.py
              each part of the contract (``store.base``) as SQL
"""

from bridgehead.control.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
