"""The sandbox's encoded-query parser and matcher (``sysparm_query``), without a server."""

from __future__ import annotations

import pytest
from bridgehead_sandbox.query import Condition, OrderBy, Query, order_records, parse

FIELDS = ("sys_id", "number", "short_description", "priority", "state", "caller_id", "assigned_to", "notes")
ROWS = [
    ("1", "INC001", "SAP is down", "1", "2", "ann", "ann", ""),
    ("2", "INC002", "Printer jam", "3", "7", "bob", "cid", "x=y"),
    ("3", "PRB003", "sap slow after outage", "10", "2", "", "", "a^b"),
    ("4", "INC004", "Mail outage", "2", "6", "dan", "dan", None),  # no "notes" field at all
]
RECORDS = [{k: v for k, v in zip(FIELDS, row, strict=True) if v is not None} for row in ROWS]
COLUMNS = {"sys_id", "number", "short_description", "priority", "state", "caller_id", "assigned_to", "notes"}


def ids(text: str, columns: set[str] | None = None) -> list[str]:
    predicate = parse(text, columns).predicate()
    return [r["sys_id"] for r in RECORDS if predicate(r)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["1", "2", "3", "4"]),
        ("state=2", ["1", "3"]),
        ("state!=2", ["2", "4"]),
        ("short_descriptionLIKEsap", ["1", "3"]),  # contains, case-insensitive
        ("short_description*SAP", ["1", "3"]),
        ("short_descriptionNOT LIKEsap", ["2", "4"]),
        ("short_description!*sap", ["2", "4"]),
        ("numberSTARTSWITHINC", ["1", "2", "4"]),
        ("short_descriptionENDSWITHOUTAGE", ["3", "4"]),
        ("short_description%outage", ["3", "4"]),
        ("priorityIN1,2", ["1", "4"]),
        ("priorityNOT IN1,2", ["2", "3"]),
        ("caller_idISEMPTY", ["3"]),
        ("caller_idISNOTEMPTY", ["1", "2", "4"]),
        ("caller_idEMPTYSTRING", ["3"]),
        ("caller_idANYTHING", ["1", "2", "3", "4"]),
        ("notesISEMPTY", ["1", "4"]),  # a field a record lacks reads as empty
        ("priority<3", ["1", "4"]),  # numbers compare as numbers: "10" is not < "3"
        ("priority<=3", ["1", "2", "4"]),
        ("priority>2", ["2", "3"]),
        ("priority>=10", ["3"]),
        ("number<INC003", ["1", "2"]),  # text compares as text
        ("priorityBETWEEN2@3", ["2", "4"]),
        ("caller_idSAMEASassigned_to", ["1", "3", "4"]),
        ("caller_idNSAMEASassigned_to", ["2"]),
        ("notes=x=y", ["2"]),  # the first operator ends the field; the rest is the value
        ("state=2^priority=1", ["1"]),  # ^ is AND
        ("state=7^ORstate=6", ["2", "4"]),  # ^OR is OR
        ("numberSTARTSWITHINC^state=2^ORpriority=3", ["1", "2"]),  # a AND (b OR c)
        ("state=7^NQpriority=10", ["2", "3"]),  # ^NQ ORs whole groups
        ("state=7^ORstate=6^NQnumber=INC001^priority=1", ["1", "2", "4"]),
        ("state=2^EQ", ["1", "3"]),  # the UI's end marker is ignored
    ],
)
def test_operators_and_joiners_match_like_an_instance(text: str, expected: list[str]) -> None:
    """Each documented operator and joiner selects the records ServiceNow would."""
    assert expected == ids(text)


def test_or_binds_tighter_than_and() -> None:
    """``a^b^ORc`` parses as a AND (b OR c), one clause per ``^``."""
    query = parse("a=1^b=2^ORc=3")
    assert (((Condition("a", "=", "1"),), (Condition("b", "=", "2"), Condition("c", "=", "3"))),) == query.groups


def test_order_by_clauses_are_collected_in_order() -> None:
    """ORDERBY and ORDERBYDESC terms become sort keys, first one primary, and filter nothing."""
    query = parse("active=true^ORDERBYnumber^ORDERBYDESCcategory")
    assert (OrderBy("number"), OrderBy("category", descending=True)) == query.order
    assert (((Condition("active", "=", "true"),),),) == query.groups


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ORDERBYpriority", ["1", "4", "2", "3"]),  # all numbers: numeric order
        ("ORDERBYDESCpriority", ["3", "2", "4", "1"]),
        ("ORDERBYcaller_id", ["3", "1", "2", "4"]),  # empty first, as NULLs ascending
        ("ORDERBYstate^ORDERBYDESCnumber", ["3", "1", "4", "2"]),  # ties on state broken by number desc
    ],
)
def test_order_records_sorts_by_each_key(text: str, expected: list[str]) -> None:
    """Sorting follows the ORDERBY keys, stable for ties, numbers as numbers."""
    assert expected == [r["sys_id"] for r in order_records(RECORDS, parse(text).order)]


@pytest.mark.parametrize(
    "term",
    [
        "assigned_toIN_HIERARCHYabc",  # not read as IN with value "_HIERARCHYabc"
        "caller_idDYNAMIC90d1921e5f510100a9ad2572f2b477fe",
        "sys_created_onONToday@javascript:gs.beginningOfToday()@javascript:gs.endOfToday()",
        "caller_id=javascript:gs.getUserID()",
        "priorityBETWEEN1",  # BETWEEN needs low@high
        "GROUPBYstate",
        "no operator here",
    ],
)
def test_terms_the_sandbox_cannot_run_are_dropped(term: str) -> None:
    """An unsupported term is dropped and listed in ``invalid``; the rest of the query still runs."""
    query = parse(f"state=2^{term}")
    assert (term,) == query.invalid
    assert (((Condition("state", "=", "2"),),),) == query.groups


def test_related_list_query_is_skipped_whole() -> None:
    """``^RLQUERY...^ENDRLQUERY`` is dropped up to its end marker, and later terms still count."""
    query = parse("state=2^RLQUERYtask.parent,>=1^active=true^ENDRLQUERY^priority=1")
    assert 1 == len(query.invalid)
    assert ["1"] == [r["sys_id"] for r in RECORDS if query.matches(r)]


def test_unknown_fields_are_dropped_when_columns_are_known() -> None:
    """With the table's columns, a term on any other field is dropped (and then matches all)."""
    query = parse("u_nonexistent=1^state=7", COLUMNS)
    assert ("u_nonexistent=1",) == query.invalid
    assert ["2"] == ids("u_nonexistent=1^state=7", COLUMNS)
    assert ["1", "2", "3", "4"] == ids("u_nonexistent=1", COLUMNS)
    assert ("ORDERBYu_nonexistent",) == parse("ORDERBYu_nonexistent", COLUMNS).invalid


def test_known_columns_decide_where_a_mixed_case_field_ends() -> None:
    """Staging columns may be labels ("ID", "ORG"); a known column wins over operators and the OR prefix."""
    columns = {"ID", "INDEX", "ORG", "name"}
    query = parse("INDEX=5^ORG=acme^ORname=x^IDIN1,2", columns)
    assert () == query.invalid
    assert 1 == len(query.groups)
    index, org_or_name, id_in = query.groups[0]
    assert (Condition("INDEX", "=", "5"),) == index
    assert (Condition("ORG", "=", "acme"), Condition("name", "=", "x")) == org_or_name
    assert (Condition("ID", "IN", "1,2"),) == id_in


def test_without_columns_the_shortest_field_before_an_operator_is_taken() -> None:
    """Without columns, lower-case names parse exactly and mixed-case ones when unambiguous."""
    assert (((Condition("u_ONE", "=", "1"),),),) == parse("u_ONE=1").groups  # "ON" is skipped, not taken
    assert (((Condition("short_description", "LIKE", "SAP"),),),) == parse("short_descriptionLIKESAP").groups


def test_no_value_operators_ignore_a_value() -> None:
    """ISEMPTY and friends take no value; one given is not kept."""
    assert (((Condition("caller_id", "ISEMPTY", ""),),),) == parse("caller_idISEMPTYxyz").groups


def test_samesas_needs_a_known_other_field() -> None:
    """SAMEAS compares two fields, so an unknown second field makes the term invalid."""
    assert ("caller_idSAMEASnope",) == parse("caller_idSAMEASnope", COLUMNS).invalid


def test_equality_on_finds_an_indexable_condition() -> None:
    """``equality_on`` names an ``=`` every match must satisfy, and nothing when ORs or groups forbid it."""
    assert Condition("user_name", "=", "ann") == parse("activeISNOTEMPTY^user_name=ann").equality_on()
    assert parse("user_name=ann^ORuser_name=bob").equality_on() is None
    assert parse("user_name=ann^NQuser_name=bob").equality_on() is None
    assert parse("user_nameLIKEann").equality_on() is None


def test_empty_query_matches_everything_and_orders_nothing() -> None:
    """No terms: every record matches and no order is imposed."""
    assert Query() == parse("")
    assert Query() == parse("^^EQ")


def test_equality_and_membership_ignore_case_unless_case_sensitive() -> None:
    """=, !=, IN and NOT IN compare as an instance's collation does, ignoring case;
    case_sensitive=True (instance.case_sensitive) makes them exact."""
    assert ["1"] == ids("number=inc001")
    assert ["2", "3", "4"] == ids("number!=Inc001")
    assert ["1", "2"] == ids("numberINinc001,INC002")
    assert ["3", "4"] == ids("numberNOT INinc001,inc002")

    def exact(text: str) -> list[str]:
        predicate = parse(text, case_sensitive=True).predicate()
        return [r["sys_id"] for r in RECORDS if predicate(r)]

    assert [] == exact("number=inc001")
    assert ["1"] == exact("number=INC001")
    assert ["2"] == exact("numberINinc001,INC002")
