"""LDAP attribute values in their JSON forms, decided by the directory's own schema.

    single-valued (SINGLE-VALUE in the schema)   a scalar; multi-valued: a list, even of one
    binary syntaxes (Octet String, JPEG, ...)    base64
    Integer                                      a JSON number
    Boolean                                      true / false
    Generalized Time                             ISO 8601, "2024-01-31T12:00:00Z"
    anything else                                the UTF-8 string as stored

Active Directory's ``objectGUID`` and ``objectSid`` also come in their string forms, under
``objectGUID_string`` ("8f4e...-...", the form AD tools show) and ``objectSid_string``
("S-1-5-21-...").

An attribute the schema does not describe (a server that hides its schema) is a list of
UTF-8 strings, or of base64 text where a value is not UTF-8.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# LDAP syntax OIDs (RFC 4517, and the binary ones older schemas still use).
_SYNTAX = "1.3.6.1.4.1.1466.115.121.1."
BINARY_SYNTAXES = frozenset(
    _SYNTAX + n
    for n in (
        "4",  # Audio
        "5",  # Binary
        "8",  # Certificate
        "9",  # Certificate List
        "10",  # Certificate Pair
        "23",  # Fax
        "28",  # JPEG
        "40",  # Octet String
        "49",  # Supported Algorithm
    )
)
INTEGER_SYNTAX = _SYNTAX + "27"
BOOLEAN_SYNTAX = _SYNTAX + "7"
TIME_SYNTAX = _SYNTAX + "24"
# Attributes binary whatever a schema says (AD publishes some as strings in some versions).
_ALWAYS_BINARY = frozenset({"objectguid", "objectsid", "jpegphoto", "thumbnailphoto", "usercertificate"})

Convert = Callable[[bytes], Any]


@dataclass(frozen=True)
class Form:
    single: bool
    convert: Convert


def _text(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii")


def _binary(value: bytes) -> Any:
    return base64.b64encode(value).decode("ascii")


def _integer(value: bytes) -> Any:
    try:
        return int(value)
    except ValueError:
        return _text(value)


def _boolean(value: bytes) -> Any:
    if value == b"TRUE":
        return True
    if value == b"FALSE":
        return False
    return _text(value)


def _time(value: bytes) -> Any:
    """Generalized Time "YYYYMMDDHHMMSS[.f]Z" (or with an offset) as ISO 8601."""
    text = _text(value)
    if not isinstance(text, str) or len(text) < 15 or not text[:14].isdigit():
        return text
    date = f"{text[0:4]}-{text[4:6]}-{text[6:8]}T{text[8:10]}:{text[10:12]}:{text[12:14]}"
    rest = text[14:]
    if rest.startswith((".", ",")):
        digits = rest[1:].split("Z")[0].split("+")[0].split("-")[0]
        date += "." + digits
        rest = rest[1 + len(digits) :]
    if rest == "Z":
        return date + "Z"
    if len(rest) == 5 and rest[0] in "+-" and rest[1:].isdigit():
        return f"{date}{rest[:3]}:{rest[3:]}"
    return text


UNKNOWN = Form(single=False, convert=_text)


def form_for(syntax: str | None, single: bool, name: str) -> Form:
    if name.lower() in _ALWAYS_BINARY or (syntax is not None and syntax in BINARY_SYNTAXES):
        return Form(single, _binary)
    if syntax == INTEGER_SYNTAX:
        return Form(single, _integer)
    if syntax == BOOLEAN_SYNTAX:
        return Form(single, _boolean)
    if syntax == TIME_SYNTAX:
        return Form(single, _time)
    return Form(single, _text)


def guid_string(value: bytes) -> str | None:
    """AD's objectGUID (16 bytes, the first three fields little-endian) as AD tools show it."""
    if len(value) != 16:
        return None
    return str(uuid.UUID(bytes_le=value))


def sid_string(value: bytes) -> str | None:
    """A binary security identifier as "S-1-5-21-...": revision, 48-bit big-endian authority,
    then little-endian 32-bit sub-authorities."""
    if len(value) < 8 or len(value) != 8 + 4 * value[1]:
        return None
    authority = int.from_bytes(value[2:8], "big")
    subs = [int.from_bytes(value[8 + 4 * i : 12 + 4 * i], "little") for i in range(value[1])]
    return "-".join(["S", str(value[0]), str(authority), *map(str, subs)])


_STRING_FORMS: dict[str, tuple[str, Callable[[bytes], str | None]]] = {
    "objectguid": ("_string", guid_string),
    "objectsid": ("_string", sid_string),
}


def _texts(values: list[bytes]) -> list[Any]:
    try:
        return list(map(bytes.decode, values))  # UTF-8, strict; no Python frame per value
    except UnicodeDecodeError:
        return [_text(v) for v in values]


# What to do with one attribute name as the server returns it: the record key, whether a
# lone value is a scalar, how to convert the values, and an extra string form (AD ids).
_Plan = tuple[str, bool, Callable[[list[bytes]], list[Any]], "tuple[str, Callable[[bytes], str | None]] | None"]
_MAX_PLANS = 10_000


class EntryEncoder:
    """Turns one entry's raw attributes (name -> list of bytes) into a record."""

    def __init__(self, forms: Mapping[str, Form], requested: Iterable[str] | None) -> None:
        self._forms = {k.lower(): v for k, v in forms.items()}
        # Explicitly requested attributes the entry lacks are null, so every record of a
        # job has the same keys (what a ServiceNow field map wants); "*" and "+" add none.
        self._absent = [a for a in requested or () if a not in ("*", "+", "1.1") and not a.startswith("@")]
        self.schema_names = frozenset(self._forms)
        # Entries of one search repeat the same attribute names: each is worked out once.
        self._plans: dict[str, _Plan] = {}

    def _plan(self, name: str) -> _Plan:
        lowered = name.lower()
        # "member;range=0-1499": ldap3 has fetched the rest (auto_range); keep the bare name.
        key = name.split(";range=", 1)[0] if ";range=" in lowered else name
        form = self._forms.get(key.lower().split(";", 1)[0], UNKNOWN)
        convert = form.convert
        convert_all: Callable[[list[bytes]], list[Any]] = (
            _texts if convert is _text else lambda values: [convert(v) for v in values]
        )
        extra = _STRING_FORMS.get(key.lower())
        return key, form.single, convert_all, (key + extra[0], extra[1]) if extra is not None else None

    def record(self, dn: str, raw: Mapping[str, list[bytes]]) -> dict[str, Any]:
        out: dict[str, Any] = {"dn": dn}
        plans = self._plans
        for name, values in raw.items():
            plan = plans.get(name)
            if plan is None:
                plan = self._plan(name)
                if len(plans) < _MAX_PLANS:
                    plans[name] = plan
            key, single, convert_all, extra = plan
            if key != name and key in raw:
                continue  # a first range (member;range=0-1499): ldap3 merged all into the bare name
            converted = convert_all(values)
            out[key] = converted[0] if single and len(converted) == 1 else converted
            if extra is not None:
                extra_key, fn = extra
                strings = [fn(v) for v in values]
                out[extra_key] = strings[0] if len(strings) == 1 else strings
        if self._absent:
            present = {k.lower() for k in out}
            for name in self._absent:
                if name.lower() not in present:
                    out[name] = None
        return out
