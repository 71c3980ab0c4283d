"""The directory the LDAP tests, the demo and the bench load into ``Slapd``: people, groups
(a big one, nested ones) under a suffix, as entries and as LDIF for ``slapadd``."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping, Sequence

DEFAULT_SUFFIX = "dc=example,dc=com"
SESSION_PEOPLE = 10_000
BIG_GROUP_SIZE = 5_000
SMALL_PEOPLE = 30
READER_PASSWORD = "reader-secret"  # noqa: S105 - the throw-away test directory's read-only account

# One directory entry: its DN and attribute -> values (str is written as UTF-8, bytes as is).
Entry = tuple[str, Mapping[str, Sequence[str | bytes]]]


def person_dn(i: int, suffix: str = DEFAULT_SUFFIX) -> str:
    return f"uid=user{i:05d},ou=people,{suffix}"


def group_dn(name: str, suffix: str = DEFAULT_SUFFIX) -> str:
    return f"cn={name},ou=groups,{suffix}"


def person_description(i: int) -> str:
    # Non-ASCII on every entry so that LDIF base64 and UTF-8 decoding are exercised everywhere.
    return f"Employé n° {i}, bureau de Tōkyō 日本"


def person_photo(i: int) -> bytes:
    # A JPEG SOI/EOI frame around bytes that are not valid UTF-8: any client that decodes it as
    # text instead of treating it as binary fails loudly.
    return b"\xff\xd8\xff\xe0" + i.to_bytes(4, "big") + bytes(range(0x80, 0x90)) + b"\xff\xd9"


def base_entries(suffix: str = DEFAULT_SUFFIX) -> list[Entry]:
    """The suffix entry, ``ou=people``, ``ou=groups`` and the ``cn=reader`` bind account."""
    rdn_attr, _, rdn_value = suffix.split(",", 1)[0].partition("=")
    if rdn_attr.lower() != "dc":
        raise ValueError(f"suffix must start with a dc= RDN, not {suffix!r}")
    return [
        (suffix, {"objectClass": ["top", "dcObject", "organization"], "dc": [rdn_value], "o": ["Example Corp"]}),
        (f"ou=people,{suffix}", {"objectClass": ["top", "organizationalUnit"], "ou": ["people"]}),
        (f"ou=groups,{suffix}", {"objectClass": ["top", "organizationalUnit"], "ou": ["groups"]}),
        (
            f"cn=reader,{suffix}",
            {
                "objectClass": ["top", "organizationalRole", "simpleSecurityObject"],
                "cn": ["reader"],
                "description": ["read-only service account for tests"],
                # Cleartext is fine here: slapd compares it as is, and it keeps the test data readable.
                "userPassword": [READER_PASSWORD],
            },
        ),
    ]


def people(n: int, suffix: str = DEFAULT_SUFFIX, start: int = 1) -> Iterator[Entry]:
    """``n`` inetOrgPerson entries ``uid=user00001,ou=people,<suffix>`` onwards.

    Every third person has two telephone numbers (a multi-valued attribute), every tenth a
    ``jpegPhoto`` (binary), and all of them a non-ASCII ``description``.
    """
    for i in range(start, start + n):
        uid = f"user{i:05d}"
        attrs: dict[str, list[str | bytes]] = {
            "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson"],
            "uid": [uid],
            "cn": [f"User {i:05d}"],
            "sn": [f"Surname{i:05d}"],
            "givenName": [f"Given{i:05d}"],
            "mail": [f"{uid}@example.com"],
            "employeeNumber": [str(i)],
            "telephoneNumber": [f"+1 555 {i:07d}"],
            "description": [person_description(i)],
        }
        if i % 3 == 0:
            attrs["telephoneNumber"].append(f"+33 1 {i:08d}")
        if i % 10 == 0:
            attrs["jpegPhoto"] = [person_photo(i)]
        yield person_dn(i, suffix), attrs


def group(name: str, members: Iterable[str], suffix: str = DEFAULT_SUFFIX) -> Entry:
    """A groupOfNames; ``members`` are DNs (groupOfNames needs at least one)."""
    member_dns: list[str | bytes] = list(members)
    if not member_dns:
        raise ValueError("groupOfNames requires at least one member")
    return group_dn(name, suffix), {"objectClass": ["top", "groupOfNames"], "cn": [name], "member": member_dns}


def big_group(size: int = BIG_GROUP_SIZE, suffix: str = DEFAULT_SUFFIX) -> Entry:
    """``cn=big``: ``size`` members, users 1..size (they must be loaded too)."""
    return group("big", (person_dn(i, suffix) for i in range(1, size + 1)), suffix)


def nested_groups(suffix: str = DEFAULT_SUFFIX) -> list[Entry]:
    """Groups for nested-membership expansion, over users 1..6.

    ``nested-a`` = {nested-b, user1}; ``nested-b`` = {nested-c, user2, user3};
    ``nested-c`` = {user4, user5}; so nested-a expands to users 1..5.
    ``cycle-x`` and ``cycle-y`` contain each other (and user6) to test loop protection.
    """
    return [
        group("nested-a", [group_dn("nested-b", suffix), person_dn(1, suffix)], suffix),
        group("nested-b", [group_dn("nested-c", suffix), person_dn(2, suffix), person_dn(3, suffix)], suffix),
        group("nested-c", [person_dn(4, suffix), person_dn(5, suffix)], suffix),
        group("cycle-x", [group_dn("cycle-y", suffix), person_dn(6, suffix)], suffix),
        group("cycle-y", [group_dn("cycle-x", suffix)], suffix),
    ]


def session_entries(suffix: str = DEFAULT_SUFFIX) -> Iterator[Entry]:
    yield from base_entries(suffix)
    yield from people(SESSION_PEOPLE, suffix)
    yield big_group(BIG_GROUP_SIZE, suffix)
    yield from nested_groups(suffix)


def small_entries(suffix: str = DEFAULT_SUFFIX) -> Iterator[Entry]:
    yield from base_entries(suffix)
    yield from people(SMALL_PEOPLE, suffix)
    yield group("small", (person_dn(i, suffix) for i in range(1, 11)), suffix)
    yield from nested_groups(suffix)


def _ldif_value(attr: str, value: str | bytes) -> str:
    # Plain only for a subset of RFC 2849's SAFE-STRING that str methods test at C speed (the
    # per-byte check took most of the 10,000-entry build): printable ASCII, not starting with
    # space, ':' or '<', and no trailing space (legal, but slapadd strips it). Everything else,
    # bytes included, goes base64, which is always correct.
    if (
        isinstance(value, str)
        and value.isascii()
        and value.isprintable()
        and value[:1] not in (" ", ":", "<")
        and not value.endswith(" ")
    ):
        return f"{attr}: {value}\n"
    raw = value.encode() if isinstance(value, str) else value
    return f"{attr}:: {base64.b64encode(raw).decode('ascii')}\n"


def to_ldif(entries: Iterable[Entry]) -> Iterator[str]:
    """LDIF records, one string per entry (slapadd reads unfolded lines of any length)."""
    for dn, attrs in entries:
        lines = [_ldif_value("dn", dn)]
        for attr, values in attrs.items():
            lines.extend(_ldif_value(attr, v) for v in values)
        yield "".join(lines) + "\n"
