"""What an instance says its tables are: ``sys_db_object`` (tables, ``super_class`` chain) and
``sys_dictionary`` (fields with ``internal_type``, ``max_length``, ``mandatory``,
``read_only``), read through the Table API as any integration user with read access can.

An instance stores only the fields it has (unknown body fields are dropped) and returns each
value as text in its own form: ``normalise`` turns a value into that form, so the sink can
compare what it would send with what the instance returns and write only real changes.

    read_schema(client, table) -> TableSchema | None     (None: the instance has no such table)
    schema_readable(client) -> bool                      (False: no schema to read, e.g. a
                                                          stand-in that makes tables on write)
    cached_schema(client, table)                         (read_schema, kept ttl_s per instance)

``SchemaUnreadable``: the instance refused to show its dictionary (no read access to
``sys_db_object`` / ``sys_dictionary``: grant the integration user those, docs/sinks.md).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Protocol


class _Answer(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def body(self) -> Any: ...
    def error_message(self) -> str: ...


class TableReader(Protocol):
    """What reading a schema needs of an ``InstanceClient``. A protocol rather than the class,
    because the client holds this module's ``SchemaCache``: importing it back would be a cycle."""

    async def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> _Answer: ...


_MAX_SUPER_CLASSES = 16  # cmdb_ci_linux_server is 5 deep; a loop in the chain stops here
_PAGE = 1000
_MAX_FIELDS = 20_000  # per table, inherited included (an instance's widest are ~1,000)
DEFAULT_TTL_S = 300.0

_DICTIONARY_FIELDS = "name,element,column_label,internal_type,max_length,mandatory,read_only,active"
INTEGER_TYPES = frozenset({"integer", "longint", "order_index"})
DECIMAL_TYPES = frozenset({"decimal", "float", "currency"})
_SCALE = {"float": 7}  # decimal places kept; decimal and currency keep 2
DATE_TIME_TYPES = frozenset({"glide_date_time", "due_date"})
DATE_TYPES = frozenset({"glide_date"})
BOOLEAN_TYPES = frozenset({"boolean"})
# Types whose text is not cut at max_length: fixed forms (numbers, dates, booleans), and
# values an instance keeps elsewhere or resolves (journals, references, lists, scripts).
_UNTRUNCATED = (
    INTEGER_TYPES
    | DECIMAL_TYPES
    | DATE_TIME_TYPES
    | DATE_TYPES
    | BOOLEAN_TYPES
    | frozenset({"reference", "glide_list", "journal", "journal_input", "conditions", "script"})
)
_TRUE = frozenset({"true", "1", "yes", "y", "on"})


class SchemaUnreadable(Exception):
    """The instance would not show sys_db_object or sys_dictionary to this user."""


@dataclass(frozen=True)
class FieldInfo:
    name: str  # lower case, as the instance names columns
    label: str
    type: str  # sys_dictionary.internal_type: "string", "integer", "glide_date_time", ...
    max_length: int  # 0: unknown / unlimited
    read_only: bool = False
    mandatory: bool = False


@dataclass(frozen=True)
class TableSchema:
    name: str
    fields: dict[str, FieldInfo] = field(default_factory=dict)  # lower-case name -> field
    chain: tuple[str, ...] = ()  # the table, then its super classes

    def field(self, name: str) -> FieldInfo | None:
        return self.fields.get(name.lower())

    def by_label(self, label: str) -> FieldInfo | None:
        wanted = label.casefold()
        return next((f for f in self.fields.values() if f.label.casefold() == wanted), None)


def plain(value: Any) -> str:
    """A Table API value as text (a reference comes back as {"link", "value"})."""
    if isinstance(value, dict):
        value = value.get("value")
    return "" if value is None else str(value)


def normalise(info: FieldInfo, value: str) -> str:
    """``value`` as the instance stores and returns it in a field like ``info``: booleans
    ``true``/``false`` (anything but a true spelling is false), integers rounded, decimals at
    the type's scale without trailing zeros, date-times in UTC ``YYYY-MM-DD HH:MM:SS``, dates
    ``YYYY-MM-DD``, text cut at max_length; a value the type cannot hold is stored empty.
    Idempotent, so it applies to both sides of a comparison."""
    if value == "":
        return ""
    kind = info.type.lower()
    if kind in BOOLEAN_TYPES:
        return "true" if value.strip().casefold() in _TRUE else "false"
    if kind in INTEGER_TYPES:
        number = _decimal(value)
        return "" if number is None else _integer_text(number)
    if kind in DECIMAL_TYPES:
        number = _decimal(value)
        return "" if number is None else _decimal_text(number, _SCALE.get(kind, 2))
    if kind in DATE_TIME_TYPES:
        moment = _date_time(value)
        return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")
    if kind in DATE_TYPES:
        moment = _date_time(value)
        return "" if moment is None else moment.strftime("%Y-%m-%d")
    if info.max_length > 0 and kind not in _UNTRUNCATED and len(value) > info.max_length:
        return value[: info.max_length]
    return value


def _decimal(value: str) -> Decimal | None:
    try:
        number = Decimal(value.strip().replace(",", ""))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _integer_text(number: Decimal) -> str:
    try:
        return str(int(number.quantize(Decimal(1), rounding=ROUND_HALF_UP)))
    except InvalidOperation:  # more digits than a number field holds (1E+30): stored empty
        return ""


def _decimal_text(number: Decimal, scale: int) -> str:
    """Rounded to ``scale`` places, without trailing zeros or exponent: 1.50 -> "1.5"; a
    number with more digits than the field holds (1E+30) is stored empty."""
    try:
        rounded = number.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return ""
    text = format(rounded, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$"
)


def _date_time(value: str) -> dt.datetime | None:
    """ISO 8601 as GlideDateTime reads it: a date, a time to the second, an offset; in UTC."""
    match = _DATE_TIME.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        moment = dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    if zone and zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        moment = moment - offset if zone[0] == "+" else moment + offset
    return moment


async def _rows(client: TableReader, table: str, query: str, fields: str, limit: int) -> list[dict[str, Any]]:
    """Every row of ``table`` matching ``query`` (paged), or SchemaUnreadable."""
    rows: list[dict[str, Any]] = []
    while len(rows) < limit:
        answer = await client.request(
            "GET",
            f"/api/now/table/{table}",
            params={
                "sysparm_query": query,
                "sysparm_fields": fields,
                "sysparm_limit": str(min(_PAGE, limit - len(rows))),
                "sysparm_offset": str(len(rows)),
                "sysparm_exclude_reference_link": "true",
            },
        )
        page = answer.body.get("result") if isinstance(answer.body, dict) else None
        if answer.status == 404 and not rows:
            return []  # a v1 Table API answers an empty match 404
        if answer.status != 200 or not isinstance(page, list):
            raise SchemaUnreadable(
                f"reading {table} ({query}) answered HTTP {answer.status}: {answer.error_message()}; "
                f"the integration user needs read access to sys_db_object and sys_dictionary"
            )
        rows += [r for r in page if isinstance(r, dict)]
        if len(page) < _PAGE:
            break
    return rows


async def _table_record(client: TableReader, query: str) -> dict[str, Any] | None:
    rows = await _rows(client, "sys_db_object", query, "sys_id,name,label,super_class", 1)
    return rows[0] if rows else None


async def schema_readable(client: TableReader) -> bool:
    """Whether the instance describes its tables at all: every instance has a sys_db_object
    row for sys_db_object itself; a stand-in that makes tables on first write has none."""
    try:
        return await _table_record(client, "name=sys_db_object") is not None
    except SchemaUnreadable:
        return False


async def read_schema(client: TableReader, table: str) -> TableSchema | None:
    """``table``'s fields, inherited ones included (a child's definition wins), or None."""
    record = await _table_record(client, f"name={table}")
    if record is None:
        return None
    chain = [plain(record.get("name")) or table]
    parent = plain(record.get("super_class"))
    while parent and len(chain) < _MAX_SUPER_CLASSES:
        above = await _table_record(client, f"sys_id={parent}")
        if above is None:
            break
        name = plain(above.get("name"))
        if not name or name in chain:
            break
        chain.append(name)
        parent = plain(above.get("super_class"))
    fields: dict[str, FieldInfo] = {}
    for name in chain:  # the table first: its definitions win over its parents'
        for row in await _rows(client, "sys_dictionary", f"name={name}", _DICTIONARY_FIELDS, _MAX_FIELDS):
            element = plain(row.get("element")).lower()
            if not element or element in fields or plain(row.get("active")).lower() == "false":
                continue
            fields[element] = FieldInfo(
                name=element,
                label=plain(row.get("column_label")) or element,
                type=plain(row.get("internal_type")).lower() or "string",
                max_length=_int(plain(row.get("max_length"))),
                read_only=plain(row.get("read_only")).lower() == "true",
                mandatory=plain(row.get("mandatory")).lower() == "true",
            )
    return TableSchema(chain[0], fields, tuple(chain))


def _int(text: str) -> int:
    try:
        return max(0, int(text))
    except ValueError:
        return 0


class SchemaCache:
    """Schemas of one instance's tables, each read at most once per ``ttl_s``. ``UNKNOWN``
    (not None) when the instance has no readable dictionary at all."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._tables: dict[str, tuple[float, TableSchema | None]] = {}
        self._readable: tuple[float, bool] | None = None

    async def get(self, client: TableReader, table: str) -> TableSchema | None | Unknown:
        now = time.monotonic()
        if self._readable is None or now - self._readable[0] > self.ttl_s:
            self._readable = (now, await schema_readable(client))
        if not self._readable[1]:
            return UNKNOWN
        kept = self._tables.get(table.lower())
        if kept is not None and now - kept[0] <= self.ttl_s:
            return kept[1]
        schema = await read_schema(client, table)
        self._tables[table.lower()] = (now, schema)
        return schema


class Unknown:
    """The instance does not describe its schema: check nothing, send every field."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()
