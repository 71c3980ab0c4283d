"""Schema versions, shared by the backends: each numbers its migrations and runs the missing
ones on start (``sqlite.schema``, ``postgres.schema``), and refuses a database made by a newer
Bridgehead, whose tables this code would misread or damage."""

from __future__ import annotations

from bridgehead.core.errors import BridgeheadError


class SchemaTooNew(BridgeheadError):
    """The database's schema version is newer than this code knows."""

    exit_code = 2

    def __init__(self, where: str, found: int, known: int) -> None:
        super().__init__(
            f"{where}: the store's schema is version {found}, newer than this bridgehead-control knows "
            f"(version {known}): run the newer bridgehead-control that wrote it, or restore a backup made "
            "before the upgrade"
        )
        self.where = where
        self.found = found
        self.known = known
