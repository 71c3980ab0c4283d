"""A value as an instance stores and returns it, by the field's type (SERVICENOW_API.md §1.4).

Every value on the wire is a string. An instance converts what a client sends to the field's
own form: booleans ``"true"``/``"false"``, numbers in their plain canonical text, date-times
in UTC ``"YYYY-MM-DD HH:MM:SS"`` (ISO 8601 input such as ``2024-05-01T10:00:00Z`` is accepted,
as GlideDateTime parses it), dates ``"YYYY-MM-DD"``, and text cut at the field's max length.
A value the type cannot hold (``"abc"`` for an integer) is stored empty, as an instance
stores NULL. Pure functions, no I/O: the store calls :func:`store_value` on every write.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from bridgehead_sandbox.schema import FieldDef

_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})
# Scale of each numeric type on an instance: decimal/currency keep 2 places, float 7.
_SCALE = {"decimal": 2, "currency": 2, "float": 7}
_INTEGER_TYPES = frozenset({"integer", "longint"})
_DATE_TIME_TYPES = frozenset({"glide_date_time", "due_date"})
# Reference values stay as given: the sandbox keeps a plain string (a sys_id or, in its
# transforms, a name) where an instance resolves a reference, so cutting it at 32 would lose it.
_UNCUT_TYPES = frozenset({"reference", "glide_list", "journal", "journal_input", "conditions", "script"})
_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$"
)
MAX_VALUE_CHARS = 65_000_000  # the longest text any field type holds on an instance


def to_text(value: object) -> str:
    """A JSON value as text before the field's type is applied."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict) and isinstance(value.get("value"), str):
        return str(value["value"])  # a reference as the Table API returns it: {"link", "value"}
    return json.dumps(value, separators=(",", ":"))


def store_value(field: FieldDef, value: object) -> str:
    """``value`` as the instance would store (and then return) it in ``field``."""
    text = to_text(value)
    kind = field.type
    if text == "":
        return ""
    if kind == "boolean":
        return boolean(text)
    if kind in _INTEGER_TYPES:
        return integer(text)
    if kind in _SCALE:
        return decimal(text, _SCALE[kind])
    if kind in _DATE_TIME_TYPES:
        return date_time(text)
    if kind == "glide_date":
        return date(text)
    if kind in _UNCUT_TYPES:
        return text[:MAX_VALUE_CHARS]
    return text[: field.max_length]


def boolean(text: str) -> str:
    folded = text.strip().casefold()
    if folded in _TRUE:
        return "true"
    if folded in _FALSE:
        return "false"
    return "false"  # GlideElement: anything but a true spelling is false


def _decimal(text: str) -> Decimal | None:
    try:
        number = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def integer(text: str) -> str:
    number = _decimal(text)
    if number is None:
        return ""
    try:
        return str(int(number.quantize(Decimal(1), rounding=ROUND_HALF_UP)))
    except InvalidOperation:  # more digits than a number field holds (1E+30): stored empty
        return ""


def decimal(text: str, scale: int) -> str:
    """Rounded to the type's scale, then written without trailing zeros or an exponent
    (``"1.50"`` -> ``"1.5"``, ``"2400.00"`` -> ``"2400"``)."""
    number = _decimal(text)
    if number is None:
        return ""
    try:
        rounded = number.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than a number field holds (1E+30): stored empty
        return ""
    plain = format(rounded, "f")
    if "." in plain:
        plain = plain.rstrip("0").rstrip(".")
    return "0" if plain in ("-0", "") else plain


def _parse_date_time(text: str) -> dt.datetime | None:
    match = _DATE_TIME.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        moment = dt.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=dt.UTC
        )
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        moment -= sign * offset
    return moment


def date_time(text: str) -> str:
    """UTC ``YYYY-MM-DD HH:MM:SS``; an offset is applied, fractions of a second dropped."""
    moment = _parse_date_time(text)
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def date(text: str) -> str:
    moment = _parse_date_time(text)
    return "" if moment is None else moment.strftime("%Y-%m-%d")
