"""Nested group expansion: each group's members, transitively, for ``expand_groups``.

The groups under the search base are read first (one paged search for entries with a
``member`` or ``uniqueMember``), then every record that has members gains
``member_expanded``: the DNs reached through its members, following member groups to any
depth, without the groups themselves, each once, in the order first reached. Cycles (A in
B in A) are cut. A member group outside the search base is not known, and is listed as a
member like any other DN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class GroupMembers:
    FILTER: ClassVar[str] = "(|(member=*)(uniqueMember=*))"
    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("member", "uniqueMember")

    def __init__(self) -> None:
        self._direct: dict[str, list[str]] = {}  # lowercased group DN -> member DNs as stored

    def add(self, dn: str, raw: Mapping[str, list[bytes]]) -> None:
        members: list[str] = []
        for name, values in raw.items():
            if name.split(";", 1)[0].lower() in ("member", "uniquemember"):
                members.extend(v.decode("utf-8", "replace") for v in values)
        self._direct[dn.lower()] = members

    def __len__(self) -> int:
        return len(self._direct)

    def members_of(self, dn: str) -> list[str]:
        """Every non-group DN reached from group ``dn`` through its members."""
        seen_groups = {dn.lower()}
        seen: set[str] = set()
        out: list[str] = []
        stack = list(reversed(self._direct.get(dn.lower(), [])))
        while stack:
            member = stack.pop()
            key = member.lower()
            if key in self._direct:
                if key not in seen_groups:
                    seen_groups.add(key)
                    stack.extend(reversed(self._direct[key]))
            elif key not in seen:
                seen.add(key)
                out.append(member)
        return out

    def expand(self, record: dict[str, Any]) -> None:
        if any(k.lower() in ("member", "uniquemember") for k in record):
            record["member_expanded"] = self.members_of(str(record["dn"]))
