"""Group membership for the ``ldap_groups`` preset: ``sys_user_grmember`` rows that make each
delivered group's members exactly the users its ``member`` / ``uniqueMember`` DNs name.

A member DN is found as the user whose ``source`` is ``"ldap:" + DN`` (what the ``ldap_users``
preset and the instance's own LDAP import write), so users are delivered first: a DN with no
user yet is left out, and the group's next run adds it. Memberships not listed any more are
removed; a group deactivated by a deletion keeps its rows, as the instance's import does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from bridgehead.control.sinks.client import InstanceClient
from bridgehead.control.sinks.presets import MEMBERS_TABLE, member_dns
from bridgehead.control.sinks.targets import Outcome, plain, table_rows

_MEMBERS_TABLE = f"/api/now/table/{MEMBERS_TABLE}"


class Memberships:
    def __init__(self, client: InstanceClient) -> None:
        self.client = client
        self._users: dict[str, str | None] = {}  # DN -> sys_user sys_id (None: no such user)

    async def sync(self, records: Sequence[Mapping[str, Any]], outcomes: Sequence[Outcome]) -> None:
        groups = [
            (outcome.sys_id, member_dns(record))
            for record, outcome in zip(records, outcomes, strict=True)
            if record.get("op") != "delete" and outcome.status != "error" and outcome.sys_id
        ]
        for group_id, dns in groups:
            await self._group(group_id, dns)

    async def _group(self, group_id: str, dns: list[str]) -> None:
        users = await asyncio.gather(*(self._user(dn) for dn in dns))
        want = {u for u in users if u}
        answer = await self.client.request(
            "GET",
            _MEMBERS_TABLE,
            params={"sysparm_query": f"group={group_id}", "sysparm_fields": "sys_id,user", "sysparm_limit": "10000"},
        )
        rows = table_rows(answer, f"reading sys_user_grmember of group {group_id}")
        have = {plain(r.get("user")): plain(r.get("sys_id")) for r in rows}
        adds = [u for u in want if u not in have]
        removes = [row_id for user, row_id in have.items() if user not in want]
        await asyncio.gather(
            *(self.client.request("POST", _MEMBERS_TABLE, json={"group": group_id, "user": u}) for u in adds),
            *(self.client.request("DELETE", f"{_MEMBERS_TABLE}/{r}") for r in removes),
        )

    async def _user(self, dn: str) -> str | None:
        if dn not in self._users:
            answer = await self.client.request(
                "GET",
                "/api/now/table/sys_user",
                params={"sysparm_query": f"source=ldap:{dn}", "sysparm_fields": "sys_id", "sysparm_limit": "1"},
            )
            rows = answer.body.get("result") if isinstance(answer.body, dict) else None
            found = rows[0] if answer.status == 200 and isinstance(rows, list) and rows else None
            self._users[dn] = plain(found.get("sys_id")) if isinstance(found, dict) else None
        return self._users[dn]
