"""The private files of the data dirs (``bridgehead.core.files``) and the listen addresses of
the servers (``bridgehead.core.addresses``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bridgehead.core.addresses import is_loopback, parse_listen
from bridgehead.core.files import make_private_tree, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_write_private_replaces_a_file_whole_with_mode_0600_and_leaves_no_temporary(tmp_path: Path) -> None:
    """A second write replaces the first; the file is 0600 whatever the umask; no .tmp is left."""
    target = tmp_path / "agent.key"
    old = os.umask(0)
    try:
        assert write_private(target, b"first")
        assert write_private(target, b"second")
    finally:
        os.umask(old)
    assert (b"second", 0o600) == (target.read_bytes(), mode(target))
    assert ["agent.key"] == sorted(p.name for p in tmp_path.iterdir())


def test_an_exclusive_write_loses_to_the_file_already_there(tmp_path: Path) -> None:
    """``exclusive``: the first file to land wins (two processes making the CA at once)."""
    target = tmp_path / "ca.key"
    assert write_private(target, b"winner", exclusive=True)
    assert not write_private(target, b"loser", exclusive=True)
    assert b"winner" == target.read_bytes()
    assert ["ca.key"] == sorted(p.name for p in tmp_path.iterdir())


def test_make_private_tree_closes_every_file_and_folder_but_follows_no_link(tmp_path: Path) -> None:
    """Folders 0700, files 0600, and a symbolic link's target outside the tree keeps its mode."""
    outside = tmp_path / "outside.txt"
    outside.write_text("shared")
    outside.chmod(0o644)
    tree = tmp_path / "data"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub").chmod(0o755)
    (tree / "sub" / "journal.db").write_text("")
    (tree / "sub" / "journal.db").chmod(0o666)
    (tree / "link").symlink_to(outside)

    make_private_tree(tree)

    assert (0o700, 0o700, 0o600) == (mode(tree), mode(tree / "sub"), mode(tree / "sub" / "journal.db"))
    assert 0o644 == mode(outside)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9000", ("127.0.0.1", 9000)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:443", ("0.0.0.0", 443)),  # noqa: S104 - parsed, not bound
    ],
)
def test_parse_listen_reads_host_and_port(value: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, an IPv6 host in brackets, an empty host meaning loopback."""
    assert expected == parse_listen(value)


@pytest.mark.parametrize("value", ["8080", "localhost", "host:http", "host:65536", "host:-1"])
def test_parse_listen_refuses_what_is_not_host_colon_port(value: str) -> None:
    """A missing or non-numeric port, or one out of range, is refused with the value named."""
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_listen(value)


def test_loopback_is_localhost_or_a_loopback_address_never_a_resolved_name() -> None:
    """Plain HTTP is allowed only there; a name is not looked up (DNS could say anything)."""
    assert [True, True, True, True] == [is_loopback(h) for h in ("localhost", "127.0.0.1", "127.9.9.9", "::1")]
    assert [False] * 4 == [is_loopback(h) for h in ("", None, "10.0.0.1", "loopback.example")]
