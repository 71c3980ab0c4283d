"""The sandbox's tables: held in memory, persisted to SQLite (WAL) in the data dir.

Why both: every read (queries, coalesce lookups, pages) is served from memory, so a query is a
loop over Python dicts and a coalesce lookup is a dict hit; SQLite only makes the data survive
a restart, and is read once, at start. The sandbox is a stand-in sized for tests and demos
(``limits.max_records``, one million by default, about 1 KB of memory each).

Indexes: a table builds a dict index on a tuple of fields the first time something asks for it
(a transform map's coalesce fields, or a query's ``field=value``), in one O(n) pass, and keeps
it current on every write after that; a lookup is then O(1) however large the table. Nothing
about indexes is stored: they are rebuilt lazily after a restart.

Schema (issue 17): with a :class:`~bridgehead_sandbox.schema.Schema` the store is strict, as
an instance is: a table exists only when defined, a write keeps only the table's fields and
stores each value in its type's form (:mod:`bridgehead_sandbox.values`). The definitions are
records too: ``sys_db_object`` and ``sys_dictionary`` hold one per table and field, the
built-in and config ones in memory only (they are rebuilt at start, with negative ``seq``) and
an admin's own (``POST`` through the Table API) stored like any record and replayed into the
schema at start. Without a schema (``[instance] schema = "lenient"``) any table and field is
created by its first write and values are kept verbatim.

Matching: an instance compares ``=``/``IN`` and coalesce keys ignoring case; the indexes here
key on case-folded values unless ``case_sensitive``.

Writes go through :meth:`Store.transaction`: one SQLite transaction per request (a batch of
200 import rows is one commit), applied to memory as it goes. All of it runs on the event
loop's thread with no ``await`` inside, so requests never interleave within a transaction;
a commit in WAL mode with ``synchronous=NORMAL`` does not wait for an fsync. If a
transaction fails, SQLite rolls back and memory is reloaded from the file, so the two never
disagree.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

import msgspec

from bridgehead.core.errors import ConfigError
from bridgehead_sandbox.errors import SnError, invalid_table
from bridgehead_sandbox.query import Query
from bridgehead_sandbox.records import SYS_FIELDS, new_record, now_text
from bridgehead_sandbox.schema import (
    SYS_FIELD_DEFS,
    FieldDef,
    Schema,
    SchemaError,
    TableDef,
    field_sys_id,
    label_of,
    table_sys_id,
)
from bridgehead_sandbox.values import store_value

DB_FILE = "sandbox.db"
LOCK_FILE = "sandbox.lock"
META_TABLES = ("sys_db_object", "sys_dictionary")
_SYS_NAMES = frozenset(SYS_FIELDS)
MAX_QUERY_INDEXES = 16  # per table; beyond this a query on a new field scans (coalesce always indexes)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,          -- creation order: the default order of a list
    tbl TEXT NOT NULL,
    sys_id TEXT NOT NULL,             -- not indexed: lookups are served from memory
    data BLOB NOT NULL                -- the record as a JSON object of strings
);
CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY, created_on TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_tokens (
    hash TEXT PRIMARY KEY,            -- sha256 of the token; the token itself is not kept
    kind TEXT NOT NULL,               -- access | refresh
    client_id TEXT NOT NULL,
    username TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

Record = dict[str, str]
Key = tuple[str, ...]
_decode = msgspec.json.Decoder(dict[str, str]).decode
_encode = msgspec.json.Encoder().encode


class Table:
    """One table's records in creation order, its columns, and its indexes."""

    def __init__(self, name: str, definition: TableDef | None = None, *, case_sensitive: bool = False) -> None:
        self.name = name
        self.rows: dict[str, Record] = {}
        self.seq: dict[str, int] = {}
        # An ordered set: the defined fields (strict), or every field any record ever had
        # (lenient, or an import set table); a record lacking one reads as "".
        self.columns: dict[str, None] = dict.fromkeys(SYS_FIELDS)
        self.definition: TableDef | None = None
        self.case_sensitive = case_sensitive
        self._indexes: dict[Key, dict[Key, list[str]]] = {}
        if definition is not None:
            self.define(definition)

    def define(self, definition: TableDef) -> None:
        """Take (new) field definitions: the columns are the defined fields, in order."""
        self.definition = definition
        grown = {name: None for name in self.columns if name not in definition.fields and definition.extensible}
        self.columns = dict.fromkeys(definition.fields) | grown

    def key_of(self, values: Key) -> Key:
        """A lookup key as the indexes hold it: case-folded unless the table is case-sensitive."""
        return values if self.case_sensitive else tuple(v.casefold() for v in values)

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, sys_id: str) -> Record | None:
        return self.rows.get(sys_id)

    def find(self, fields: Key, key: Key) -> Record | None:
        """The oldest record whose ``fields`` equal ``key`` (a coalesce match), ignoring case
        as an instance does unless the store is ``case_sensitive``."""
        ids = self._index(fields).get(self.key_of(key))
        if not ids:
            return None
        return self.rows[min(ids, key=self.seq.__getitem__)] if len(ids) > 1 else self.rows[ids[0]]

    def find_all(self, fields: Key, key: Key) -> list[Record]:
        """Every record whose ``fields`` equal ``key`` (same matching as :meth:`find`), oldest first."""
        ids = self._index(fields).get(self.key_of(key), [])
        return [self.rows[i] for i in sorted(ids, key=self.seq.__getitem__)]

    def select(self, query: Query) -> list[Record]:
        """The records matching ``query``, in creation order (ORDER BY is the caller's)."""
        predicate = query.predicate()
        eq = query.equality_on()
        if eq is not None and ((eq.field,) in self._indexes or len(self._indexes) < MAX_QUERY_INDEXES):
            ids = self._index((eq.field,)).get(self.key_of((eq.value,)), [])
            candidates = [self.rows[i] for i in sorted(ids, key=self.seq.__getitem__)]
            return [r for r in candidates if predicate(r)]
        return [r for r in self.rows.values() if predicate(r)]

    def _index(self, fields: Key) -> dict[Key, list[str]]:
        index = self._indexes.get(fields)
        if index is None:
            index = {}
            for sys_id, record in self.rows.items():
                index.setdefault(self._key(record, fields), []).append(sys_id)
            self._indexes[fields] = index
        return index

    def _key(self, record: Record, fields: Key) -> Key:
        if self.case_sensitive:
            return tuple(record.get(f, "") for f in fields)
        return tuple(record.get(f, "").casefold() for f in fields)

    # --- changes, made only through a Writer so that SQLite sees them too ------------------

    def _put(self, record: Record, seq: int) -> None:
        sys_id = record["sys_id"]
        self.rows[sys_id] = record
        self.seq[sys_id] = seq
        if not self.columns.keys() >= record.keys():
            self.columns.update((name, None) for name in record if name not in self.columns)
        for fields, index in self._indexes.items():
            index.setdefault(self._key(record, fields), []).append(sys_id)

    def _replace(self, record: Record) -> None:
        sys_id = record["sys_id"]
        old = self.rows[sys_id]
        self.rows[sys_id] = record
        if not self.columns.keys() >= record.keys():
            self.columns.update((name, None) for name in record if name not in self.columns)
        for fields, index in self._indexes.items():
            old_key = self._key(old, fields)
            new_key = self._key(record, fields)
            if old_key != new_key:
                _unindex(index, old_key, sys_id)
                index.setdefault(new_key, []).append(sys_id)

    def _remove(self, sys_id: str) -> None:
        old = self.rows.pop(sys_id)
        del self.seq[sys_id]
        for fields, index in self._indexes.items():
            _unindex(index, self._key(old, fields), sys_id)


def _unindex(index: dict[Key, list[str]], key: Key, sys_id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.remove(sys_id)
        if not ids:
            del index[key]


class Writer:
    """The changes of one transaction (see :meth:`Store.transaction`).

    Memory changes at once; SQLite gets each touched row's final state when the transaction
    ends, one ``executemany`` per kind of change: rows are addressed by ``seq`` (the rowid),
    so an insert appends to the end of the file's one B-tree and nothing else is indexed.
    """

    def __init__(self, store: Store, now: str) -> None:
        self._store = store
        self._db = store.db
        self.now = now
        self._inserted: dict[int, tuple[str, Record]] = {}
        self._updated: dict[int, Record] = {}
        self._deleted: list[int] = []
        self._meta_changed = False  # sys_db_object / sys_dictionary written: rebuild the schema

    def table(self, name: str) -> Table:
        """The table. Strict: it must be defined (else 400 Invalid table, as on an instance);
        lenient: created by its first write."""
        table = self._store.tables.get(name)
        if table is None:
            if self._store.schema is not None:
                raise invalid_table(name)
            self._db.execute("INSERT INTO tables (name, created_on) VALUES (?, ?)", (name, self.now))
            table = self._store.tables[name] = self._store.new_table(name)
        return table

    def insert(self, table: Table, record: Record) -> Record:
        """Insert ``record`` and return it as stored (strict: shaped to the table's fields)."""
        store = self._store
        record = store.shape(table, record)
        if store.total >= store.max_records:
            raise SnError(
                400,
                "Operation Failed",
                f"the sandbox holds its maximum of {store.max_records} records (limits.max_records)",
            )
        if table.name in META_TABLES and store.schema is not None:
            store.apply_definition(table.name, record, inserting=True)
        store.last_seq += 1
        table._put(record, store.last_seq)
        store.total += 1
        self._inserted[store.last_seq] = (table.name, record)
        if table.name in META_TABLES and store.schema is not None:
            if table.name == "sys_db_object" and not record.get("super_class"):
                self._add_sys_fields(record.get("name", ""))
        return record

    def _add_sys_fields(self, table_name: str) -> None:
        """A new root table gets the sys_* dictionary entries, as an instance creates them."""
        dictionary = self._store.tables["sys_dictionary"]
        for f in SYS_FIELD_DEFS:
            entry = dictionary_record(table_name, f)
            if dictionary.get(entry["sys_id"]) is None:
                self.insert(dictionary, new_meta_record(entry, "system", self.now))

    def update(self, table: Table, record: Record) -> Record:
        """Replace the record with ``record`` and return it as stored."""
        store = self._store
        if table.seq[record["sys_id"]] <= 0:
            raise SnError(403, "Operation Failed", f"{table.name} {record['sys_id']} is built in and read-only here")
        record = store.shape(table, record)
        if table.name in META_TABLES and store.schema is not None:
            store.apply_definition(table.name, record, inserting=False)
            self._meta_changed = True
        table._replace(record)
        seq = table.seq[record["sys_id"]]
        if seq in self._inserted:
            self._inserted[seq] = (table.name, record)
        else:
            self._updated[seq] = record
        return record

    def delete(self, table: Table, sys_id: str) -> None:
        seq = table.seq[sys_id]
        if seq <= 0:
            raise SnError(403, "Operation Failed", f"{table.name} {sys_id} is built in and read-only here")
        if table.name in META_TABLES:
            self._meta_changed = True
        table._remove(sys_id)
        self._store.total -= 1
        if self._inserted.pop(seq, None) is None:
            self._updated.pop(seq, None)
            self._deleted.append(seq)

    def next_number(self, counter: str, first: int) -> int:
        """The next value of a named counter (import set numbers), starting at ``first``."""
        row = self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
            (counter, first),
        ).fetchone()
        return int(row[0])

    def _flush(self) -> None:
        db = self._db
        if self._inserted:
            db.executemany(
                "INSERT INTO records (seq, tbl, sys_id, data) VALUES (?, ?, ?, ?)",
                [(seq, name, r["sys_id"], _encode(r)) for seq, (name, r) in self._inserted.items()],
            )
        if self._updated:
            db.executemany(
                "UPDATE records SET data = ? WHERE seq = ?", [(_encode(r), seq) for seq, r in self._updated.items()]
            )
        if self._deleted:
            db.executemany("DELETE FROM records WHERE seq = ?", [(seq,) for seq in self._deleted])


class Store:
    """The tables. ``schema``: builds the defined tables (strict); None = lenient, any table
    and field created by its first write. ``case_sensitive``: exact matches in indexes."""

    def __init__(
        self,
        data_dir: Path,
        *,
        synchronous: str = "NORMAL",
        max_records: int = 1_000_000,
        schema: Callable[[], Schema] | None = None,
        case_sensitive: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.max_records = max_records
        self._schema_factory = schema
        self.schema: Schema | None = None
        self.case_sensitive = case_sensitive
        self.tables: dict[str, Table] = {}
        self.total = 0
        self.last_seq = 0
        self._lock = lock_data_dir(data_dir)
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) and
            # token writes outside one commit at once.
            self.db = sqlite3.connect(data_dir / DB_FILE, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(str(data_dir / DB_FILE), "", f"cannot open the sandbox database: {exc}") from None
        self._load()

    def _load(self) -> None:
        self.schema = self._schema_factory() if self._schema_factory is not None else None
        self.tables = {}
        if self.schema is not None:
            self.tables = {name: self.new_table(name) for name in self.schema.names()}
            self._put_defined(self.schema)
        for (name,) in self.db.execute("SELECT name FROM tables"):  # created by a lenient run
            self.tables.setdefault(name, self.new_table(name))
        self.total = 0
        self.last_seq = 0
        for seq, name, data in self.db.execute("SELECT seq, tbl, data FROM records ORDER BY seq"):
            table = self.tables.get(name) or self.tables.setdefault(name, self.new_table(name))
            record = _decode(data)
            if self.schema is not None and name in META_TABLES:
                with contextlib.suppress(SnError):  # a definition that no longer applies stays a record
                    self.apply_definition(name, record, inserting=True)
            elif table.definition is not None and table.definition.extensible:
                record = self.shape(table, record)
            table._put(record, seq)
            self.total += 1
            self.last_seq = seq

    def new_table(self, name: str) -> Table:
        definition = self.schema.table(name) if self.schema is not None else None
        return Table(name, definition, case_sensitive=self.case_sensitive)

    def _put_defined(self, schema: Schema) -> None:
        """The built-in and config definitions as sys_db_object / sys_dictionary records, in
        memory only (negative seq: before every stored record, never written to SQLite)."""
        now = now_text()
        records: list[tuple[str, Record]] = []
        for name in schema.names():
            definition = schema.table(name)
            if definition is None:
                continue
            parent = definition.super_class
            records.append(("sys_db_object", new_meta_record(table_record(definition), "system", now)))
            own = list(schema.own_fields(name))
            if parent is None:
                own = [*SYS_FIELD_DEFS, *own]
            records.extend(("sys_dictionary", new_meta_record(dictionary_record(name, f), "system", now)) for f in own)
        for seq, (table_name, record) in enumerate(records, start=-len(records)):
            self.tables[table_name]._put(record, seq)

    def shape(self, table: Table, record: Mapping[str, str]) -> Record:
        """``record`` as a strict table stores it: only its fields (an import set table gains
        new ones), each value in its type's form. Lenient tables keep it as it is."""
        definition = table.definition
        if definition is None:
            return dict(record)
        out: Record = {}
        for name, value in record.items():
            field = definition.fields.get(name)
            if field is None:
                if not definition.extensible or self.schema is None:
                    continue  # an unknown field is dropped silently, as on an instance
                try:
                    field = self.schema.add_column(table.name, name)
                except SchemaError:
                    field = None
                if field is None:
                    continue
                self._refresh(table.name)
                definition = table.definition or definition
            out[name] = value if name in _SYS_NAMES else store_value(field, value)
        return out

    def _refresh(self, name: str) -> None:
        """Give ``name`` and the tables extending it their current definitions."""
        schema = self.schema
        if schema is None:
            return
        for other in schema.names():
            if name in schema.lineage(other):
                definition = schema.table(other)
                if definition is not None:
                    table = self.tables.get(other)
                    if table is None:
                        self.tables[other] = self.new_table(other)
                    else:
                        table.define(definition)

    def apply_definition(self, table_name: str, record: Mapping[str, str], *, inserting: bool) -> None:
        """A sys_db_object / sys_dictionary record written: define the table or field it
        describes, or refuse it with 400 and a reason (nothing is written then)."""
        schema = self.schema
        if schema is None:
            return
        try:
            if table_name == "sys_db_object":
                name = record.get("name", "")
                if inserting and name in schema:
                    raise SchemaError(f"table {name!r} already exists")
                parent = self._parent_name(record.get("super_class", ""))
                extensible = parent is not None and "sys_import_set_row" in schema.lineage(parent)
                schema.define_table(name, record.get("label", ""), parent, extensible=extensible)
                self._refresh(name)
            else:
                table, element = record.get("name", ""), record.get("element", "")
                if not element:
                    return  # the "collection" entry an instance keeps for the table itself
                kind = record.get("internal_type", "") or "string"
                length = int(record.get("max_length", "") or "0") or (32 if kind == "reference" else 40)
                field = FieldDef(
                    element,
                    record.get("column_label", "") or label_of(element),
                    kind,
                    length,
                    record.get("mandatory", "") == "true",
                    record.get("read_only", "") == "true",
                    record.get("reference", "") or None,
                )
                schema.define_field(table, field)
                self._refresh(table)
        except (SchemaError, ValueError) as exc:
            raise SnError(400, "Operation Failed", f"Error during insert of {table_name}: {exc}") from None

    def _parent_name(self, super_class: str) -> str | None:
        """super_class is the parent's sys_db_object sys_id; a table name is taken too."""
        if not super_class:
            return None
        objects = self.tables.get("sys_db_object")
        row = objects.get(super_class) if objects is not None else None
        if row is not None:
            return row.get("name") or None
        if self.schema is not None and super_class in self.schema:
            return super_class
        raise SchemaError(f"super_class {super_class!r} is no sys_db_object record")

    @contextlib.contextmanager
    def transaction(self, now: str) -> Iterator[Writer]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            writer = Writer(self, now)
            yield writer
            writer._flush()
            self.db.execute("COMMIT")
            if writer._meta_changed:  # a definition changed or went: rebuild from the records
                self._load()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may have ended it already
                self.db.execute("ROLLBACK")
            self._load()  # memory took the changes as they came; take them back
            raise

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def clear(self) -> None:
        """Delete every table and record (``POST /sandbox/reset`` with ``data``)."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM records")
        self.db.execute("DELETE FROM tables")
        self.db.execute("DELETE FROM counters")
        self.db.execute("COMMIT")
        self._load()

    # --- OAuth tokens (hashes only), so that a token outlives a restart as on an instance ---

    def tokens(self) -> list[tuple[str, str, str, str, float]]:
        return list(self.db.execute("SELECT hash, kind, client_id, username, expires_at FROM oauth_tokens"))

    def put_token(self, token_hash: str, kind: str, client_id: str, username: str, expires_at: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO oauth_tokens VALUES (?, ?, ?, ?, ?)",
            (token_hash, kind, client_id, username, expires_at),
        )

    def drop_tokens(self, hashes: list[str]) -> None:
        self.db.executemany("DELETE FROM oauth_tokens WHERE hash = ?", [(h,) for h in hashes])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()
        self._lock.close()


def lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold the data dir for this process: two sandboxes on one dir would each trust their
    own copy in memory and overwrite each other's changes."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(data_dir / LOCK_FILE, "ab")  # noqa: SIM115 - held open for the process's life
    except OSError as exc:
        raise ConfigError("--data-dir", "", f"cannot use {data_dir}: {exc.strerror}") from None
    if sys.platform != "win32":
        import fcntl

        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ConfigError("--data-dir", "", f"{data_dir} is in use by another bridgehead-sandbox") from None
    return handle


def table_record(definition: TableDef) -> Record:
    """A table's sys_db_object fields; super_class refers to the parent's record."""
    parent = definition.super_class
    return {
        "sys_id": table_sys_id(definition.name),
        "name": definition.name,
        "label": definition.label,
        "super_class": table_sys_id(parent) if parent else "",
        "is_extendable": "true",
    }


def dictionary_record(table: str, field: FieldDef) -> Record:
    """A field's sys_dictionary fields (element = field name, name = its table)."""
    return {
        "sys_id": field_sys_id(table, field.name),
        "name": table,
        "element": field.name,
        "column_label": field.label,
        "internal_type": field.type,
        "max_length": str(field.max_length),
        "mandatory": "true" if field.mandatory else "false",
        "read_only": "true" if field.read_only else "false",
        "active": "true",
        "reference": field.reference or "",
    }


def new_meta_record(fields: Record, user: str, now: str) -> Record:
    """A definition's record, keeping the stable sys_id its fields carry."""
    return new_record(fields, user, now, fields["sys_id"])
