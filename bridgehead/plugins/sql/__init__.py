"""The ``sql`` plugin: queries over ODBC, streamed as one record per row (docs/plugins/sql.md)."""

from bridgehead.plugins.sql.plugin import SqlPlugin

__all__ = ["SqlPlugin"]
