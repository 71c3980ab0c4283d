"""Sealing the control plane's private keys for the database (bridgehead.control.nodes.sealing)
and reading the secret that seals them ([store] identity_secret_*)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridgehead.control.config import StoreSection
from bridgehead.control.nodes.sealing import KDF, NONCE_BYTES, SealBroken, Sealer, derive_key, new_salt
from bridgehead.core.errors import ConfigError
from bridgehead.core.tomlconfig import convert

SECRET = b"correct horse battery staple"
# Cheap costs for the tests that do not test the KDF itself (scrypt at KDF's costs takes 0.1 s).
FAST = "scrypt:n=1024,r=8,p=1"


def test_a_sealed_value_opens_with_the_same_secret_salt_and_place() -> None:
    salt = new_salt()
    sealed = Sealer(SECRET, salt, FAST).seal(b"-----BEGIN PRIVATE KEY-----", "control_identity.ca_key")
    assert b"PRIVATE KEY" not in sealed
    assert b"-----BEGIN PRIVATE KEY-----" == Sealer(SECRET, salt, FAST).open(sealed, "control_identity.ca_key")


def test_each_seal_takes_a_fresh_nonce() -> None:
    sealer = Sealer(SECRET, new_salt(), FAST)
    first, second = sealer.seal(b"key", "here"), sealer.seal(b"key", "here")
    assert first[:NONCE_BYTES] != second[:NONCE_BYTES] and first != second


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda s, salt, sealed: (Sealer(b"another secret, long enough", salt, FAST), sealed, "a"), id="secret"
        ),
        pytest.param(lambda s, salt, sealed: (Sealer(SECRET, new_salt(), FAST), sealed, "a"), id="salt"),
        pytest.param(lambda s, salt, sealed: (s, sealed, "b"), id="place"),
        pytest.param(lambda s, salt, sealed: (s, sealed[:-1] + bytes([sealed[-1] ^ 1]), "a"), id="tampered"),
        pytest.param(lambda s, salt, sealed: (s, sealed[:20], "a"), id="truncated"),
    ],
)
def test_a_sealed_value_does_not_open_with_anything_else(change: object) -> None:
    salt = new_salt()
    sealer = Sealer(SECRET, salt, FAST)
    sealed = sealer.seal(b"private", "a")
    other, value, where = change(sealer, salt, sealed)  # type: ignore[operator]
    with pytest.raises(SealBroken):
        other.open(value, where)


def test_the_kdf_is_scrypt_with_its_costs_named() -> None:
    salt = new_salt()
    assert 32 == len(derive_key(SECRET, salt))
    assert derive_key(SECRET, salt, KDF) == derive_key(SECRET, salt)
    assert derive_key(SECRET, salt, KDF) != derive_key(SECRET, salt, FAST)
    with pytest.raises(SealBroken, match="unknown key derivation"):
        derive_key(SECRET, salt, "argon2id:m=65536")


def store_section(keys: dict[str, str] | None = None) -> StoreSection:
    return convert(
        {"backend": "postgresql", "database": "postgresql://u@db:5432/bh", **(keys or {})}, StoreSection, "t"
    )


def test_the_secret_comes_from_an_environment_variable_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store_section().identity_secret() is None
    monkeypatch.setenv("BH_ID", "s3cret-from-the-environment")
    assert b"s3cret-from-the-environment" == store_section({"identity_secret_env": "BH_ID"}).identity_secret()
    path = tmp_path / "identity-secret"
    path.write_text("s3cret-from-a-file-here\n")
    assert b"s3cret-from-a-file-here" == store_section({"identity_secret_file": str(path)}).identity_secret()


def test_a_missing_or_short_secret_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BH_ID_MISSING", raising=False)
    with pytest.raises(ConfigError, match="BH_ID_MISSING is not set"):
        store_section({"identity_secret_env": "BH_ID_MISSING"}).identity_secret()
    with pytest.raises(ConfigError, match="cannot read"):
        store_section({"identity_secret_file": str(tmp_path / "nothing")}).identity_secret()
    monkeypatch.setenv("BH_ID_SHORT", "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        store_section({"identity_secret_env": "BH_ID_SHORT"}).identity_secret()


def test_the_secret_is_for_postgresql_and_from_one_source() -> None:
    with pytest.raises(ConfigError, match="one of identity_secret_env and identity_secret_file"):
        store_section({"identity_secret_env": "A", "identity_secret_file": "/b"})
    with pytest.raises(ConfigError, match='for backend = "postgresql"'):
        convert({"backend": "sqlite", "identity_secret_env": "A"}, StoreSection, "t")
