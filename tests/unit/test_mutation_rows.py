"""Every row of ``tests/mutations/*.toml`` still applies to today's code: its ``find`` text
occurs exactly once in its file, and the tests it names exist. ``scripts/mutants`` runs outside
CI, so without this a refactor can silently turn a row into an error nobody sees until the
next mutation run (three rows had, after issue 19's changes to agent_frames.py and cli.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    (table.name, row)
    for table in sorted((ROOT / "tests" / "mutations").glob("*.toml"))
    for row in tomllib.loads(table.read_text())["mutation"]
]


def test_there_are_rows() -> None:
    assert len(ROWS) > 100  # premise: the tables were found and read


@pytest.mark.parametrize(("table", "row"), ROWS, ids=[f"{t}: {r['name']}" for t, r in ROWS])
def test_a_row_applies_to_the_code_of_today(table: str, row: dict[str, object]) -> None:
    source = (ROOT / str(row["file"])).read_text()
    assert 1 == source.count(str(row["find"])), f"{table}: {row['name']}: its find text is not in {row['file']} once"
    assert row["find"] != row["replace"]
    tests = row["tests"]
    assert isinstance(tests, list) and tests
    for test in tests:
        path = str(test).split("::")[0]
        assert (ROOT / path).is_file(), f"{table}: {row['name']}: no test file {path}"
        if "::" in str(test):
            name = str(test).split("::")[1]
            assert f"def {name}(" in (ROOT / path).read_text(), f"{table}: {row['name']}: no test {test}"
