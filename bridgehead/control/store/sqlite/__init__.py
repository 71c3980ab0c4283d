"""The embedded store: one SQLite database in WAL mode in the control plane's data dir.

store.py      SqliteStore: the table classes below over one connection
writer.py     the group-commit engine (one loop turn's writes, one transaction)
schema.py     the tables, and opening a data dir of any version since 0.1
jobs.py, records.py, syncs.py, agents.py, access.py, schedules.py, sinks.py, releases.py
              each part of the contract (``store.base``) as SQL
"""

from bridgehead.control.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
