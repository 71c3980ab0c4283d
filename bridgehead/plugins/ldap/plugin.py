"""``LdapPlugin``: LDAP searches and syncs (docs/plugins/ldap.md); the work is in
``bridgehead.plugins.ldap.search``.

This module imports neither ldap3 nor the search machinery: they come with the first job, so
an agent that never runs one does not carry them (about 4 MB; the idle-agent memory goal of
DESIGN.md, measured by bench/idle_rss.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridgehead.plugins.ldap.params import LdapParams, LdapProfile
from bridgehead.sdk import JobContext, Plugin

if TYPE_CHECKING:
    from bridgehead.plugins.ldap.search import LdapEngine


class LdapPlugin(Plugin[LdapParams, LdapProfile]):
    name = "ldap"
    version = "1"
    params_type = LdapParams
    profile_type = LdapProfile
    safe_to_repeat = True  # a search changes nothing: a lost attempt may run again elsewhere

    def __init__(self) -> None:
        self._engine: LdapEngine | None = None

    async def run(self, ctx: JobContext[LdapProfile], params: LdapParams) -> None:
        if self._engine is None:
            from bridgehead.plugins.ldap.search import LdapEngine  # noqa: PLC0415 - with the first job, above

            self._engine = LdapEngine()
        await self._engine.run(ctx, params)

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.aclose()
