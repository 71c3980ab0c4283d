"""How a node's data dir is settled against the identity in its PostgreSQL database
(bridgehead.control.nodes.shared_identity), in-process on a real PostgreSQL, a schema per test.
The same with real server processes and agents: tests/integration/test_shared_identity.py."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridgehead_testing.postgres import POSTGRES_URL, postgres_admin

from bridgehead.control.nodes.shared_identity import (
    IdentityMismatch,
    IdentitySecretWrong,
    IdentityUnavailable,
    SigningKeysDiverged,
    reconcile_identity,
)
from bridgehead.control.pki import Authority, fingerprint
from bridgehead.control.signing_keys import SigningKeys
from bridgehead.control.store.postgres import PostgresStore

SECRET = b"the-identity-secret-of-these-tests"


def admin(sql: str) -> object:
    async def run() -> object:
        conn = await postgres_admin()
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    """A migrated store in a schema of its own (its connections are never opened: nothing to close)."""
    schema = f"bh_identity_{secrets.token_hex(6)}"
    admin(f"CREATE SCHEMA {schema}")
    try:
        yield PostgresStore(POSTGRES_URL, schema=schema)
    finally:
        admin(f"DROP SCHEMA {schema} CASCADE")


def rows(store: PostgresStore) -> object:
    schema = store._schema  # noqa: SLF001 - the test's own schema
    return (
        admin(f"SELECT ca_fingerprint, ca_key IS NOT NULL AS sealed FROM {schema}.control_identity"),  # noqa: S608
        admin(f"SELECT key_id, private_key IS NOT NULL, current FROM {schema}.control_signing_keys ORDER BY 1"),  # noqa: S608
    )


def served(data_dir: Path) -> tuple[str, str]:
    """Load the data dir as a serving node does (with its server certificate): its CA's
    fingerprint and current signing key."""
    authority = Authority(data_dir)
    authority.server_files(["localhost"])
    return fingerprint(authority.ca_pem), SigningKeys(data_dir).current_id


def test_the_first_node_publishes_and_the_next_takes_the_same_identity(store: PostgresStore, tmp_path: Path) -> None:
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")
    first = served(tmp_path / "a")
    reconcile_identity(store, tmp_path / "b", SECRET, "node-b")
    assert first == served(tmp_path / "b")
    for name in ("tls/ca.key", "tls/ca.pem", f"signing/{first[1]}.key", f"signing/{first[1]}.json", "signing/current"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert 0o600 == (tmp_path / "b" / name).stat().st_mode & 0o777
    # Each node keeps its own server certificate, from the shared CA.
    assert (tmp_path / "a/tls/server.pem").read_bytes() != (tmp_path / "b/tls/server.pem").read_bytes()
    ([(fp, sealed)], keys) = rows(store)  # type: ignore[misc]
    assert (first[0], True) == (fp, sealed)
    assert [(first[1], True, True)] == [tuple(k) for k in keys]
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")  # a restart: nothing to do
    assert first == served(tmp_path / "a")


def test_an_existing_data_dir_is_published(store: PostgresStore, tmp_path: Path) -> None:
    before = served(tmp_path / "a")  # a node that ran on its own before
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")
    assert before == served(tmp_path / "a")
    reconcile_identity(store, tmp_path / "b", SECRET, "node-b")
    assert before == served(tmp_path / "b")


def test_without_a_secret_only_public_halves_are_stored_and_a_node_needs_the_files(
    store: PostgresStore, tmp_path: Path
) -> None:
    reconcile_identity(store, tmp_path / "a", None, "node-a")
    first = served(tmp_path / "a")
    assert "PRIVATE" not in str(rows(store))
    ([(_, sealed)], [key]) = rows(store)  # type: ignore[misc]
    assert (False, False) == (sealed, key[1])
    with pytest.raises(IdentityUnavailable, match=r"public half only.*copy tls/ca.key") as refused:
        reconcile_identity(store, tmp_path / "b", None, "node-b")
    assert first[0] in str(refused.value) and 2 == refused.value.exit_code
    # With a secret but nothing sealed, the same.
    with pytest.raises(IdentityUnavailable, match="public half only"):
        reconcile_identity(store, tmp_path / "c", SECRET, "node-c")
    # Given a copy of the files (docs/operations.md), it starts.
    for name in ("tls", "signing"):
        (tmp_path / "b" / name).mkdir(parents=True, exist_ok=True)
        for path in (tmp_path / "a" / name).glob("*"):
            if not path.name.startswith("server"):
                (tmp_path / "b" / name / path.name).write_bytes(path.read_bytes())
    reconcile_identity(store, tmp_path / "b", None, "node-b")
    assert first == served(tmp_path / "b")


def test_a_node_with_the_secret_seals_what_was_published_bare(store: PostgresStore, tmp_path: Path) -> None:
    reconcile_identity(store, tmp_path / "a", None, "node-a")
    first = served(tmp_path / "a")
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")  # restarted with the secret set
    ([(_, sealed)], [key]) = rows(store)  # type: ignore[misc]
    assert (True, True) == (sealed, key[1])
    reconcile_identity(store, tmp_path / "b", SECRET, "node-b")
    assert first == served(tmp_path / "b")


def test_a_data_dir_with_another_ca_is_refused_and_nothing_changes(store: PostgresStore, tmp_path: Path) -> None:
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")
    first = served(tmp_path / "a")
    other = served(tmp_path / "c")  # a node that served with its own CA
    before = rows(store)
    with pytest.raises(IdentityMismatch) as refused:
        reconcile_identity(store, tmp_path / "c", SECRET, "node-c")
    message = str(refused.value)
    assert first[0] in message and other[0] in message and "node-a" in message and "\n" not in message
    assert before == rows(store)
    assert other == served(tmp_path / "c")  # its files untouched


def test_a_wrong_secret_is_refused_even_where_the_files_match(store: PostgresStore, tmp_path: Path) -> None:
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")
    for data_dir in (tmp_path / "a", tmp_path / "b"):
        with pytest.raises(IdentitySecretWrong, match="does not open") as refused:
            reconcile_identity(store, data_dir, b"not-the-identity-secret-at-all", "node-x")
        assert 2 == refused.value.exit_code
    assert not (tmp_path / "b" / "tls" / "ca.key").exists()


def test_a_ca_that_never_served_is_replaced(store: PostgresStore, tmp_path: Path) -> None:
    """``ca-cert`` or a token command on a new data dir made a CA before the node's first start."""
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")
    first = served(tmp_path / "a")
    Authority(tmp_path / "b")
    reconcile_identity(store, tmp_path / "b", SECRET, "node-b")
    assert first == served(tmp_path / "b")


def test_a_rotation_is_published_by_its_node_and_taken_by_the_others(store: PostgresStore, tmp_path: Path) -> None:
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")
    reconcile_identity(store, tmp_path / "b", SECRET, "node-b")
    old = served(tmp_path / "a")[1]
    new = SigningKeys(tmp_path / "b").rotate().key_id  # bridgehead-control signing-key rotate on b
    reconcile_identity(store, tmp_path / "b", SECRET, "node-b")  # b restarts: published
    assert {(new, True, True), (old, True, False)} == {tuple(k) for k in rows(store)[1]}  # type: ignore[index]
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")  # a restarts: taken
    keys = SigningKeys(tmp_path / "a")
    assert new == keys.current_id and {old, new} == {k.key_id for k in keys.published}
    assert keys.public(new).endorsed_by == old
    reconcile_identity(store, tmp_path / "c", SECRET, "node-c")  # a new node: the whole chain
    assert {old, new} == {k.key_id for k in SigningKeys(tmp_path / "c").published}
    # A retirement travels the same way.
    SigningKeys(tmp_path / "a").retire(old)
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")
    reconcile_identity(store, tmp_path / "b", SECRET, "node-b")
    assert [new] == [k.key_id for k in SigningKeys(tmp_path / "b").published]


def test_rotations_on_two_nodes_apart_are_refused(store: PostgresStore, tmp_path: Path) -> None:
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")
    reconcile_identity(store, tmp_path / "b", SECRET, "node-b")
    new_a = SigningKeys(tmp_path / "a").rotate().key_id
    new_b = SigningKeys(tmp_path / "b").rotate().key_id
    reconcile_identity(store, tmp_path / "a", SECRET, "node-a")
    with pytest.raises(SigningKeysDiverged, match=f"current {new_b}.*current {new_a}"):
        reconcile_identity(store, tmp_path / "b", SECRET, "node-b")


def test_nodes_starting_at_once_on_an_empty_database_share_one_identity(store: PostgresStore, tmp_path: Path) -> None:
    failures: list[BaseException] = []

    def start(name: str) -> None:
        try:
            reconcile_identity(store, tmp_path / name, SECRET, name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(f"n{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [] == failures
    assert 1 == len({served(tmp_path / f"n{i}") for i in range(4)})
