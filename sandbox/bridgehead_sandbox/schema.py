"""Which tables and fields exist: the sandbox's ``sys_db_object`` and ``sys_dictionary``.

On an instance a table exists only once it is defined (a ``sys_db_object`` record) and a field
only once it has a ``sys_dictionary`` entry; a write naming an unknown field drops it silently
and every value is stored in the field type's own form (SERVICENOW_API.md §1.4, §1.5). This
module holds those definitions: built in for the standard tables the product and its tests
use (real names, types and lengths from a base instance), added from the sandbox config
(``[tables.<name>]``) and created by an admin through the Table API (``POST`` to
``sys_db_object`` / ``sys_dictionary``), which :mod:`bridgehead_sandbox.store` turns into
:meth:`Schema.define_table` / :meth:`Schema.define_field` calls.

Types are ServiceNow's ``internal_type`` values. :mod:`bridgehead_sandbox.values` knows how
each one stores a value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bridgehead_sandbox import query

if TYPE_CHECKING:
    from bridgehead_sandbox.config import SandboxConfig, TableSection, TransformSection

# The internal_type values the sandbox knows how to store (values.py); anything else stores
# like a string. "GUID" is the sys_id column's type on an instance.
FIELD_TYPES = frozenset(
    {
        "string",
        "integer",
        "longint",
        "decimal",
        "float",
        "currency",
        "boolean",
        "glide_date_time",
        "glide_date",
        "due_date",
        "reference",
        "sys_id",
        "GUID",
        "journal",
        "journal_input",
        "html",
        "url",
        "email",
        "ip_addr",
        "choice",
        "glide_list",
        "sys_class_name",
        "table_name",
        "field_name",
        "password2",
        "translated_text",
        "script",
        "conditions",
    }
)
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,79}$")
TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,79}$")
MAX_FIELDS_PER_TABLE = 1000  # an instance's own bound is lower in practice; this keeps memory bounded
MAX_TABLES = 10_000
IMPORT_COLUMN_LENGTH = 4000
# Default lengths an instance gives a new field of each type (Studio/Form Designer defaults).
DEFAULT_LENGTHS = {"string": 40, "reference": 32, "sys_id": 32, "GUID": 32, "journal": 4000, "html": 8000}


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One ``sys_dictionary`` entry (``element`` is ``name``, ``column_label`` is ``label``)."""

    name: str
    label: str
    type: str
    max_length: int
    mandatory: bool = False
    read_only: bool = False
    reference: str | None = None  # the referenced table of a reference field


@dataclass(slots=True)
class TableDef:
    """One table as a client sees it: ``fields`` holds its own, its parents' and the sys_* fields."""

    name: str
    label: str
    super_class: str | None  # the parent table's name (its sys_db_object sys_id on the wire)
    fields: dict[str, FieldDef]
    # An import set table: its columns come from the data loaded into it, as when an instance
    # loads a data source (SERVICENOW_API.md §3), so an unknown field is added, not dropped.
    extensible: bool = False
    _by_label: dict[str, FieldDef] | None = field(default=None, repr=False)

    def field(self, name: str) -> FieldDef | None:
        return self.fields.get(name) or self.fields.get(name.lower())

    def field_by_label(self, label: str) -> FieldDef | None:
        """The field whose column label is ``label``, ignoring case (insertMultiple's default keys)."""
        if self._by_label is None:
            by_label: dict[str, FieldDef] = {}
            for f in self.fields.values():
                by_label.setdefault(f.label.casefold(), f)
            self._by_label = by_label
        return self._by_label.get(label.casefold())


def table_sys_id(name: str) -> str:
    """A built-in table's ``sys_db_object`` sys_id: stable across restarts, so references hold."""
    return hashlib.md5(f"sys_db_object:{name}".encode(), usedforsecurity=False).hexdigest()


def field_sys_id(table: str, name: str) -> str:
    return hashlib.md5(f"sys_dictionary:{table}.{name}".encode(), usedforsecurity=False).hexdigest()


def label_of(name: str) -> str:
    """The label an instance derives from a field name: ``u_directory_id`` -> "Directory id"."""
    words = name.removeprefix("u_").removeprefix("x_").replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else name


def _f(name: str, kind: str = "string", max_length: int = 0, label: str = "", ref: str | None = None) -> FieldDef:
    return FieldDef(name, label or label_of(name), kind, max_length or DEFAULT_LENGTHS.get(kind, 40), reference=ref)


# Every table has these (they come from the root of every hierarchy on an instance).
SYS_FIELD_DEFS = (
    FieldDef("sys_id", "Sys ID", "GUID", 32, read_only=True),
    FieldDef("sys_created_on", "Created", "glide_date_time", 40, read_only=True),
    FieldDef("sys_created_by", "Created by", "string", 40, read_only=True),
    FieldDef("sys_updated_on", "Updated", "glide_date_time", 40, read_only=True),
    FieldDef("sys_updated_by", "Updated by", "string", 40, read_only=True),
    FieldDef("sys_mod_count", "Updates", "integer", 40, read_only=True),
    FieldDef("sys_tags", "Tags", "string", 255, read_only=True),
)


@dataclass(frozen=True, slots=True)
class _Builtin:
    name: str
    label: str
    extends: str | None
    fields: tuple[FieldDef, ...]
    extensible: bool = False


# Names, types and lengths as on a base instance (Washington/Xanadu); the subset the product,
# its presets and its tests use. The sys_user.user_name 40 / email 100 lengths matter: a
# longer value is truncated by the instance.
BUILTIN_TABLES: tuple[_Builtin, ...] = (
    _Builtin(
        "sys_db_object",
        "Table",
        None,
        (
            _f("name", "string", 80, "Name"),
            _f("label", "string", 80, "Label"),
            _f("super_class", "reference", 32, "Extends table", "sys_db_object"),
            _f("is_extendable", "boolean", 40, "Extensible"),
            _f("number_ref", "reference", 32, "Auto number", "sys_number"),
            _f("sys_package", "reference", 32, "Package", "sys_package"),
        ),
    ),
    _Builtin(
        "sys_dictionary",
        "Dictionary Entry",
        None,
        (
            _f("name", "table_name", 80, "Table"),
            _f("element", "string", 80, "Column name"),
            _f("column_label", "string", 80, "Column label"),
            _f("internal_type", "string", 40, "Type"),
            _f("max_length", "integer", 40, "Max length"),
            _f("mandatory", "boolean", 40, "Mandatory"),
            _f("read_only", "boolean", 40, "Read only"),
            _f("active", "boolean", 40, "Active"),
            _f("reference", "reference", 32, "Reference", "sys_db_object"),
            _f("default_value", "string", 512, "Default value"),
            _f("display", "boolean", 40, "Display"),
            _f("unique", "boolean", 40, "Unique"),
        ),
    ),
    _Builtin(
        "sys_user",
        "User",
        None,
        (
            _f("user_name", "string", 40, "User ID"),
            _f("first_name", "string", 50, "First name"),
            _f("middle_name", "string", 50, "Middle name"),
            _f("last_name", "string", 50, "Last name"),
            _f("name", "string", 151, "Name"),
            _f("email", "email", 100, "Email"),
            _f("title", "string", 60, "Title"),
            _f("department", "reference", 32, "Department", "cmn_department"),
            _f("manager", "reference", 32, "Manager", "sys_user"),
            _f("company", "reference", 32, "Company", "core_company"),
            _f("location", "reference", 32, "Location", "cmn_location"),
            _f("phone", "string", 40, "Business phone"),
            _f("mobile_phone", "string", 40, "Mobile phone"),
            _f("employee_number", "string", 40, "Employee number"),
            _f("active", "boolean", 40, "Active"),
            _f("locked_out", "boolean", 40, "Locked out"),
            _f("web_service_access_only", "boolean", 40, "Web service access only"),
            _f("internal_integration_user", "boolean", 40, "Internal Integration User"),
            _f("source", "string", 255, "Source"),
            _f("ldap_server", "reference", 32, "LDAP server", "ldap_server_config"),
            _f("last_login_time", "glide_date_time", 40, "Last login time"),
            _f("user_password", "password2", 255, "Password"),
            _f("city", "string", 40, "City"),
            _f("country", "string", 3, "Country code"),
            _f("time_zone", "string", 40, "Time zone"),
        ),
    ),
    _Builtin(
        "sys_user_group",
        "Group",
        None,
        (
            _f("name", "string", 80, "Name"),
            _f("description", "string", 1024, "Description"),
            _f("email", "email", 100, "Group email"),
            _f("manager", "reference", 32, "Manager", "sys_user"),
            _f("parent", "reference", 32, "Parent", "sys_user_group"),
            _f("type", "glide_list", 1024, "Type"),
            _f("active", "boolean", 40, "Active"),
            _f("source", "string", 255, "Source"),
        ),
    ),
    _Builtin(
        "sys_user_grmember",
        "Group Member",
        None,
        (
            _f("user", "reference", 32, "User", "sys_user"),
            _f("group", "reference", 32, "Group", "sys_user_group"),
        ),
    ),
    _Builtin(
        "cmdb",
        "Base Configuration Item",
        None,
        (
            _f("name", "string", 255, "Name"),
            _f("sys_class_name", "sys_class_name", 80, "Class"),
            _f("asset_tag", "string", 40, "Asset tag"),
            _f("serial_number", "string", 255, "Serial number"),
            _f("company", "reference", 32, "Company", "core_company"),
            _f("location", "reference", 32, "Location", "cmn_location"),
            _f("install_status", "integer", 40, "Install Status"),
            _f("operational_status", "integer", 40, "Operational status"),
            _f("manufacturer", "reference", 32, "Manufacturer", "core_company"),
            _f("model_id", "reference", 32, "Model ID", "cmdb_model"),
        ),
    ),
    _Builtin(
        "cmdb_ci",
        "Configuration Item",
        "cmdb",
        (
            _f("short_description", "string", 1000, "Description"),
            _f("ip_address", "ip_addr", 255, "IP Address"),
            _f("mac_address", "string", 18, "MAC Address"),
            _f("fqdn", "string", 255, "Fully qualified domain name"),
            _f("dns_domain", "string", 255, "DNS Domain"),
            _f("category", "string", 40, "Category"),
            _f("discovery_source", "string", 40, "Discovery source"),
            _f("first_discovered", "glide_date_time", 40, "First discovered"),
            _f("last_discovered", "glide_date_time", 40, "Most recent discovery"),
            _f("assigned_to", "reference", 32, "Assigned to", "sys_user"),
            _f("support_group", "reference", 32, "Support group", "sys_user_group"),
            _f("comments", "string", 4000, "Comments"),
        ),
    ),
    _Builtin("cmdb_ci_hardware", "Hardware", "cmdb_ci", (_f("cpu_count", "integer", 40, "CPU count"),)),
    _Builtin(
        "cmdb_ci_computer",
        "Computer",
        "cmdb_ci_hardware",
        (
            _f("os", "string", 40, "Operating System"),
            _f("os_version", "string", 40, "OS Version"),
            _f("cpu_type", "string", 40, "CPU type"),
            _f("cpu_speed", "decimal", 15, "CPU speed (MHz)"),
            _f("ram", "integer", 40, "RAM (MB)"),
            _f("disk_space", "decimal", 15, "Disk space (GB)"),
        ),
    ),
    _Builtin(
        "cmdb_ci_server",
        "Server",
        "cmdb_ci_computer",
        (_f("host_name", "string", 255, "Host name"), _f("classification", "string", 40, "Classification")),
    ),
    _Builtin("cmdb_ci_linux_server", "Linux Server", "cmdb_ci_server", ()),
    _Builtin(
        "incident",
        "Incident",
        None,
        (
            _f("number", "string", 40, "Number"),
            _f("short_description", "string", 160, "Short description"),
            _f("description", "string", 4000, "Description"),
            _f("caller_id", "reference", 32, "Caller", "sys_user"),
            _f("state", "integer", 40, "State"),
            _f("priority", "integer", 40, "Priority"),
            _f("active", "boolean", 40, "Active"),
            _f("opened_at", "glide_date_time", 40, "Opened"),
            _f("cmdb_ci", "reference", 32, "Configuration item", "cmdb_ci"),
            _f("assignment_group", "reference", 32, "Assignment group", "sys_user_group"),
        ),
    ),
    _Builtin(
        "sys_import_set",
        "Import Set",
        None,
        (
            _f("number", "string", 40, "Set"),
            _f("table_name", "table_name", 80, "Import set table"),
            _f("state", "string", 40, "State"),
            _f("mode", "string", 40, "Mode"),
            _f("data_source", "reference", 32, "Data source", "sys_data_source"),
            _f("short_description", "string", 160, "Short description"),
            _f("load_completed", "glide_date_time", 40, "Load completed"),
            _f("load_run_time", "string", 40, "Load run time"),
            _f("multi_import_set", "reference", 32, "Multi import set", "sys_multi_import_set"),
        ),
    ),
    _Builtin(
        "sys_multi_import_set",
        "Multi Import Set",
        None,
        (_f("number", "string", 40, "Number"), _f("state", "string", 40, "State")),
    ),
    _Builtin(
        "sys_import_set_row",
        "Import Set Row",
        None,
        (
            _f("sys_import_set", "reference", 32, "Set", "sys_import_set"),
            _f("sys_import_row", "integer", 40, "Row"),
            _f("sys_import_state", "string", 40, "State"),
            _f("sys_import_state_comment", "string", 4000, "Comment"),
            _f("sys_row_error", "reference", 32, "Row error", "sys_import_set_row_error"),
            _f("sys_target_table", "table_name", 80, "Target table"),
            _f("sys_target_sys_id", "reference", 32, "Target record", "sys_metadata"),
            _f("sys_transform_map", "reference", 32, "Transform map", "sys_transform_map"),
            _f("template_import_log", "reference", 32, "Template import log", "sys_import_set_row_error"),
            _f("sys_class_name", "sys_class_name", 80, "Class"),
        ),
        extensible=True,
    ),
    _Builtin(
        "sys_rest_insert_multiple",
        "Rest Insert Multiple",
        None,
        (
            _f("source_table", "table_name", 80, "Source table"),
            _f("column_mapping", "string", 40, "Column mapping"),
            _f("transformation", "string", 40, "Transformation"),
            _f("active", "boolean", 40, "Active"),
            _f("transform_maps", "glide_list", 4000, "Transform maps"),
        ),
    ),
)


class SchemaError(ValueError):
    """A definition the sandbox refuses (the Table API answers it 400 with this message)."""


class Schema:
    """The defined tables. ``strict`` False is the lenient switch: any table and field is
    created by its first write (the sandbox before issue 17)."""

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        # A table's own definition: (label, super_class name, own fields, extensible).
        self._own: dict[str, tuple[str, str | None, dict[str, FieldDef], bool]] = {}
        self._resolved: dict[str, TableDef] = {}
        for builtin in BUILTIN_TABLES:
            self.define_table(builtin.name, builtin.label, builtin.extends, extensible=builtin.extensible)
            for f in builtin.fields:
                self.define_field(builtin.name, f)

    @classmethod
    def from_config(cls, tables: Mapping[str, TableSection], *, strict: bool = True) -> Schema:
        """The built-ins plus the config's ``[tables.*]``, parents defined before children."""
        schema = cls(strict=strict)
        pending = dict(tables)
        while pending:
            ready = [n for n, t in pending.items() if not t.extends or t.extends in schema or t.extends not in pending]
            if not ready:
                raise SchemaError(f"tables {', '.join(sorted(pending))} extend each other in a loop")
            for name in ready:
                section = pending.pop(name)
                known = schema.table(name)  # a built-in table gains fields: its label and parent stay
                label = section.label or (known.label if known is not None else "")
                parent = section.extends or (known.super_class if known is not None else None)
                schema.define_table(name, label, parent or None, extensible=known is not None and known.extensible)
                for element, f in section.fields.items():
                    if f.type not in FIELD_TYPES:
                        raise SchemaError(
                            f"tables.{name}.fields.{element}: unknown type {f.type!r}"
                            f" (one of {', '.join(sorted(FIELD_TYPES))})"
                        )
                    length = f.max_length or DEFAULT_LENGTHS.get(f.type, 40)
                    schema.define_field(
                        name,
                        FieldDef(
                            element,
                            f.label or label_of(element),
                            f.type,
                            length,
                            f.mandatory,
                            f.read_only,
                            f.reference or None,
                        ),
                    )
        return schema

    def __contains__(self, name: str) -> bool:
        return name in self._own

    def names(self) -> Iterator[str]:
        return iter(self._own)

    def builtin_names(self) -> frozenset[str]:
        return frozenset(b.name for b in BUILTIN_TABLES)

    def table(self, name: str) -> TableDef | None:
        """``name``'s definition with every inherited field, or None when no such table."""
        resolved = self._resolved.get(name)
        if resolved is None and name in self._own:
            label, parent, _own, extensible = self._own[name]
            fields = {f.name: f for f in SYS_FIELD_DEFS}
            for ancestor in reversed(list(self.lineage(name))):
                fields.update(self._own[ancestor][2])
            resolved = self._resolved[name] = TableDef(name, label, parent, fields, extensible)
        return resolved

    def lineage(self, name: str) -> Iterator[str]:
        """``name`` then its parents up to the root."""
        seen: set[str] = set()
        current: str | None = name
        while current is not None and current in self._own and current not in seen:
            seen.add(current)
            yield current
            current = self._own[current][1]

    def own_fields(self, name: str) -> Iterable[FieldDef]:
        return self._own[name][2].values() if name in self._own else ()

    def define_table(
        self, name: str, label: str = "", extends: str | None = None, *, extensible: bool = False
    ) -> TableDef:
        """Define (or relabel) a table. A parent must be defined first."""
        if not TABLE_NAME.match(name):
            raise SchemaError(f"{name!r} is not a table name (a-z, 0-9 and _, starting with a letter, at most 80)")
        if extends and extends not in self._own:
            raise SchemaError(f"table {name!r} extends {extends!r}, which is not defined")
        if extends and name in self.lineage(extends):
            raise SchemaError(f"table {name!r} cannot extend {extends!r}: that would make a loop")
        if name not in self._own and len(self._own) >= MAX_TABLES:
            raise SchemaError(f"the sandbox holds at most {MAX_TABLES} tables")
        own = self._own[name][2] if name in self._own else {}
        self._own[name] = (label or label_of(name), extends or None, own, extensible)
        self._resolved.clear()
        table = self.table(name)
        if table is None:  # cannot happen: just defined
            raise SchemaError(f"table {name!r} could not be defined")
        return table

    def define_field(self, table: str, field_def: FieldDef) -> FieldDef:
        if table not in self._own:
            raise SchemaError(f"no table {table!r} to add field {field_def.name!r} to")
        if not FIELD_NAME.match(field_def.name):
            raise SchemaError(f"{field_def.name!r} is not a field name (a-z, 0-9 and _, at most 80)")
        if field_def.max_length < 1 or field_def.max_length > 65_000_000:
            raise SchemaError(f"field {field_def.name!r}: max_length must be 1..65000000")
        own = self._own[table][2]
        if field_def.name not in own and len(own) >= MAX_FIELDS_PER_TABLE:
            raise SchemaError(f"table {table!r} holds at most {MAX_FIELDS_PER_TABLE} fields")
        own[field_def.name] = field_def
        self._resolved.clear()
        return field_def

    def add_column(self, table: str, name: str) -> FieldDef | None:
        """A column an extensible (import set) table gains from loaded data, a string. Its length
        is generous: an instance grows an import set column to fit its data
        (``com.glide.loader.verify_target_field_size``). None when the name cannot be a field."""
        if not FIELD_NAME.match(name):
            return None
        return self.define_field(table, FieldDef(name, label_of(name), "string", IMPORT_COLUMN_LENGTH))


def schema_for(config: SandboxConfig) -> Schema:
    """The schema a strict sandbox's config describes (built-ins plus ``[tables.*]``).

    The staging table of each ``[transforms.*]`` that ``[tables.*]`` does not define is an
    import set table (extends ``sys_import_set_row``) whose columns come from the data
    loaded into it, as when an instance loads a data source."""
    schema = Schema.from_config(config.tables)
    for staging, transform in config.transforms.items():
        if staging not in schema:
            schema.define_table(staging, "", "sys_import_set_row", extensible=True)
            # The columns its map reads exist before the first load, as on an instance whose
            # admin built the map from a loaded sample: so a client can learn their labels
            # (sys_dictionary) before it sends anything.
            for column in _source_fields(transform):
                schema.add_column(staging, column)
    return schema


def _source_fields(transform: TransformSection) -> list[str]:
    """The staging fields a transform map reads: its field maps, required fields and the
    fields its reject and ignore queries test."""
    names = [*transform.fields.values(), *transform.required]
    for text in (transform.reject_if, transform.ignore_if):
        if text:
            names += [c.field for group in query.parse(text).groups for clause in group for c in clause]
    return list(dict.fromkeys(names))
