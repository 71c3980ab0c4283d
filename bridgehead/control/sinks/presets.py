"""Ready-made mappings of LDAP records into ServiceNow's user and group tables, the way the
instance's own LDAP import fills them (``"sink": {"servicenow": "corp", "preset": "ldap_users"}``).

Rows are matched on ``u_directory_id``: the entry's stable identity (OpenLDAP ``entryUUID``,
AD ``objectGUID``), which survives renames and moves, and which is all an ldap sync's
deletion record carries. On a real instance (and the instance-like sandbox), add a string
field ``u_directory_id`` (40 characters) to ``sys_user`` and ``sys_user_group``; without it a
delivery fails before sending anything (``invalid_target``, naming table and field).

    ldap_users  -> sys_user: user_name (sAMAccountName, else uid), first_name (givenName),
                   last_name (sn), email (mail), phone (telephoneNumber), title, source
                   ("ldap:" + dn, as the instance's LDAP import writes it), active "true";
                   a deletion deactivates the user (active = "false"), as ServiceNow does
    ldap_groups -> sys_user_group: name (cn), description, email (mail), source, active;
                   members (member / uniqueMember DNs) become sys_user_grmember rows linking
                   the group to the users whose source is "ldap:" + that DN; members no
                   longer listed are removed; a deletion deactivates the group
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridgehead.control.sinks.spec import as_text
from bridgehead.control.sinks.targets import Row

ID_FIELD = "u_directory_id"
MEMBERS_TABLE = "sys_user_grmember"  # the ldap_groups preset's membership rows


@dataclass(frozen=True)
class Preset:
    table: str
    coalesce: tuple[str, ...]
    on_delete: str
    fields: tuple[tuple[str, tuple[str, ...]], ...]  # target <- first record key present
    members: bool = False


PRESETS = {
    "ldap_users": Preset(
        table="sys_user",
        coalesce=(ID_FIELD,),
        on_delete="deactivate",
        fields=(
            ("user_name", ("sAMAccountName", "uid")),
            ("first_name", ("givenName",)),
            ("last_name", ("sn",)),
            ("email", ("mail",)),
            ("phone", ("telephoneNumber",)),
            ("title", ("title",)),
        ),
    ),
    "ldap_groups": Preset(
        table="sys_user_group",
        coalesce=(ID_FIELD,),
        on_delete="deactivate",
        fields=(("name", ("cn",)), ("description", ("description",)), ("email", ("mail",))),
        members=True,
    ),
}


def identity(record: Mapping[str, Any]) -> str:
    for key in ("id", "entryUUID", "objectGUID"):
        value = record.get(key)
        if value:
            return as_text(value)
    return ""


def preset_row(preset: Preset, record: Mapping[str, Any]) -> Row:
    if record.get("op") == "delete":
        return Row({ID_FIELD: identity(record)}, delete=True)
    fields = {ID_FIELD: identity(record)}
    for target, keys in preset.fields:
        value = next((record[k] for k in keys if record.get(k) not in (None, "", [])), None)
        if isinstance(value, list):  # a multi-valued attribute: the first value, as the import does
            value = value[0] if value else None
        fields[target] = as_text(value)
    if record.get("dn"):
        fields["source"] = f"ldap:{record['dn']}"
    fields["active"] = "true"
    return Row(fields)


def member_dns(record: Mapping[str, Any]) -> list[str]:
    members: list[str] = []
    for key in ("member", "uniqueMember"):
        value = record.get(key)
        if isinstance(value, str):
            members.append(value)
        elif isinstance(value, list):
            members += [v for v in value if isinstance(v, str)]
    return members
