"""The control plane's [store] settings: PostgreSQL needs a database URL, never holds its
password inline, and reads it from a variable or a file like the other secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridgehead.control.cli import main
from bridgehead.control.config import load_control_config
from bridgehead.core.errors import ConfigError


def config(tmp_path: Path, store: str) -> str:
    path = tmp_path / "control.toml"
    path.write_text("[store]\n" + store)
    return str(path)


def test_sqlite_stays_the_default(tmp_path: Path) -> None:
    store = load_control_config(config(tmp_path, "")).store
    assert ("sqlite", "") == (store.backend, store.database)


def test_postgresql_reads_its_password_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    path = config(
        tmp_path, f'backend = "postgresql"\ndatabase = "postgresql://bh@db:5432/bh"\npassword_file = "{tmp_path}/pw"\n'
    )
    store = load_control_config(path).store
    assert ("postgresql://bh@db:5432/bh", "s3cret") == (store.database, store.password())


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        ('backend = "postgresql"\n', "needs database"),
        ('backend = "postgresql"\ndatabase = "postgresql://bh:s3cret@db/bh"\n', "no password in the URL"),
        ('backend = "postgresql"\ndatabase = "postgresql://bh@db/bh?password=s3cret"\n', "no password in the URL"),
        ('backend = "postgresql"\ndatabase = "mysql://bh@db/bh"\n', "expected postgresql://"),
        ('database = "postgresql://bh@db/bh"\n', 'for backend = "postgresql"'),
        ('backend = "postgresql"\ndatabase = "postgresql://bh@db/bh"\npassword_env = "BH_UNSET_PW_VAR"\n', "not set"),
    ],
)
def test_a_bad_store_section_is_refused_and_says_why(tmp_path: Path, store: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_control_config(config(tmp_path, store))
    assert problem in str(refused.value) and "store" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_serve_refuses_a_password_in_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--data-dir", str(tmp_path / "d"), "--database", "postgresql://bh:s3cret@127.0.0.1/bh"]
    assert 2 == main(argv)
    err = capsys.readouterr().err
    assert "--database" in err and "no password in the URL" in err and "s3cret" not in err
