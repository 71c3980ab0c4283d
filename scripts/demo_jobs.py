"""What the demo runs: its REST, SQL and LDAP jobs, each with a title and the columns it shows,
and the LDAP sync job that runs again once the directory has changed."""

from __future__ import annotations

from typing import Any

HR_ROWS = 5_000  # staff rows in the demo's HR database

# title, plugin, params, the record fields printed
Job = tuple[str, str, dict[str, Any], list[str]]


def sync_job(people_base: str) -> dict[str, Any]:
    """An LDAP sync of the people: the first run upserts every entry, the next only changes."""
    return {
        "connection": "corp_ldap",
        "base": people_base,
        "filter": "(objectClass=inetOrgPerson)",
        "attributes": ["uid", "mail"],
        "mode": "sync",
        "sync": "demo-people",
    }


def demo_jobs(suffix: str) -> list[Job]:
    """Every job of the demo's first part, in the order they run, against the directory ``suffix``."""
    people_base = f"ou=people,{suffix}"
    sync = sync_job(people_base)
    jobs = [
        (
            "All users, one record per element of $.result",
            {"connection": "internal_api", "path": "/users", "records_path": "result"},
            ["user_name", "email", "department", "active"],
        ),
        (
            "IT department only (query parameters)",
            {
                "connection": "internal_api",
                "path": "/users",
                "query": {"department": "IT"},
                "records_path": "result",
            },
            ["user_name", "department"],
        ),
        (
            "One user, the whole response as one record",
            {"connection": "internal_api", "path": "/users/7"},
            ["status", "body"],
        ),
        (
            "A path outside the profile's base_url is refused before any connection",
            {"connection": "internal_api", "path": "../admin"},
            ["status"],
        ),
    ]
    sql_jobs = [
        (
            "SQL: staff of one department, parameters bound by the driver",
            {
                "connection": "hr_db",
                "query": "SELECT id, name, department, salary, hired FROM staff WHERE department = ? ORDER BY id",
                "parameters": ["IT"],
            },
            ["id", "name", "department", "salary", "hired"],
        ),
        (
            f"SQL: all {HR_ROWS:,} rows streamed, one record each",
            {"connection": "hr_db", "query": "SELECT * FROM staff ORDER BY id"},
            ["id", "name", "active"],
        ),
        (
            "SQL: a write on the read-only profile is refused by the database session",
            {"connection": "hr_db", "query": "DELETE FROM staff"},
            [],
        ),
    ]
    ldap_jobs = [
        (
            "LDAP over LDAPS: people, paged, one record per entry (forms from the schema)",
            {"connection": "corp_ldap", "base": people_base, "filter": "(uid=*)", "page_size": 10},
            ["dn", "uid", "mail", "employeeNumber"],
        ),
        (
            "LDAP: a group with its nested groups expanded",
            {
                "connection": "corp_ldap",
                "base": f"ou=groups,{suffix}",
                "filter": "(cn=nested-a)",
                "expand_groups": True,
            },
            ["dn", "member", "member_expanded"],
        ),
        ("LDAP sync, first run: every entry is an upsert", sync, ["op", "dn", "mail"]),
    ]

    return (
        [(t, "rest", p, c) for t, p, c in jobs]
        + [(t, "sql", p, c) for t, p, c in sql_jobs]
        + [(t, "ldap", p, c) for t, p, c in ldap_jobs]
    )
