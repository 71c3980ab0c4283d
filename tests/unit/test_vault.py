"""Unit tests of the agent's local vault (bridgehead/agent/vault.py) and of credentials that name its entries."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bridgehead.agent.config import check_vault_secrets, load_config, resolve_credential
from bridgehead.agent.vault import KEY_FILE, VAULT_FILE, Vault, VaultError
from bridgehead.core.errors import ConfigError
from bridgehead.core.redact import REDACTOR

SECRET = "vault-unit-Pw/9f+2c 71"  # noqa: S105 - a fake secret


def config_text(data_dir: Path, credential: str) -> str:
    return (
        f'[agent]\nname = "a"\ndata_dir = "{data_dir}"\n\n[control]\nurl = "https://control.example.com"\n\n'
        f"[credentials.svc]\n{credential}\n"
    )


def test_a_value_set_is_read_back_and_listed_by_name_only(tmp_path: Path) -> None:
    """set then get gives the value back; entries() names it with the time it was set, never the value."""
    vault = Vault(tmp_path)
    assert {} == vault.entries()
    vault.set("svc_pw", SECRET)
    assert SECRET == vault.get("svc_pw")
    assert ["svc_pw"] == list(vault.entries())
    assert SECRET not in json.dumps(vault.entries())


def test_files_are_0600_and_hold_only_ciphertext(tmp_path: Path) -> None:
    """vault.key and vault.json are private to the owner, and neither holds the value in any form."""
    Vault(tmp_path).set("svc_pw", SECRET)
    modes = [stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in (KEY_FILE, VAULT_FILE)]
    assert [0o600, 0o600] == modes
    stored = (tmp_path / VAULT_FILE).read_bytes() + (tmp_path / KEY_FILE).read_bytes()
    forms = [SECRET.encode(), base64.b64encode(SECRET.encode()).rstrip(b"=")]
    assert [False, False] == [form in stored for form in forms]


def test_each_entry_has_its_own_nonce(tmp_path: Path) -> None:
    """The same value stored twice gives two different ciphertexts."""
    vault = Vault(tmp_path)
    vault.set("one", SECRET)
    vault.set("two", SECRET)
    doc = json.loads((tmp_path / VAULT_FILE).read_text())["secrets"]
    assert doc["one"]["nonce"] != doc["two"]["nonce"]
    assert doc["one"]["ciphertext"] != doc["two"]["ciphertext"]


def test_an_entry_copied_under_another_name_does_not_open(tmp_path: Path) -> None:
    """The name is the associated data: swapping two entries' ciphertexts makes both unreadable."""
    vault = Vault(tmp_path)
    vault.set("one", SECRET)
    vault.set("two", "another-secret-value")
    assert "another-secret-value" == vault.get("two")  # premise: it opens where it was stored
    doc = json.loads((tmp_path / VAULT_FILE).read_text())
    doc["secrets"]["two"] = doc["secrets"]["one"]
    (tmp_path / VAULT_FILE).write_text(json.dumps(doc))
    with pytest.raises(VaultError, match="does not open"):
        vault.get("two")


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A vault key with group or other permissions is refused, naming the file and its mode."""
    vault = Vault(tmp_path)
    vault.set("svc_pw", SECRET)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(VaultError, match="readable by others \\(mode 0644\\)"):
        vault.get("svc_pw")


def test_a_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    """Without vault.key the entries cannot be read, and the error says so."""
    vault = Vault(tmp_path)
    vault.set("svc_pw", SECRET)
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(VaultError, match="vault.key is missing"):
        vault.get("svc_pw")


@pytest.mark.parametrize(("name", "value"), [("svc_pw", ""), ("bad name", SECRET), ("", SECRET)])
def test_empty_values_and_bad_names_are_refused(tmp_path: Path, name: str, value: str) -> None:
    """An empty value or a name outside [A-Za-z0-9_.-] is refused and nothing is written."""
    with pytest.raises(VaultError):
        Vault(tmp_path).set(name, value)
    assert False is (tmp_path / VAULT_FILE).exists()


def test_delete_removes_the_entry(tmp_path: Path) -> None:
    """delete forgets the entry; deleting it again is an error naming it."""
    vault = Vault(tmp_path)
    vault.set("svc_pw", SECRET)
    vault.delete("svc_pw")
    assert {} == vault.entries()
    with pytest.raises(VaultError, match="no secret 'svc_pw'"):
        vault.delete("svc_pw")


def test_a_credential_naming_a_vault_entry_resolves_to_its_value(tmp_path: Path) -> None:
    """password_secret resolves to the entry's value, which is then masked with its basic-auth form."""
    Vault(tmp_path / "data").set("svc_pw", SECRET)
    path = tmp_path / "agent.toml"
    path.write_text(config_text(tmp_path / "data", 'username = "svc"\npassword_secret = "svc_pw"'))
    config = load_config(path)
    check_vault_secrets(config)
    credential = resolve_credential(config.credentials["svc"], "svc")
    basic = base64.b64encode(f"svc:{SECRET}".encode()).decode()
    assert ("svc", SECRET) == (credential.username, credential.password)
    assert "*** ***" == REDACTOR.redact(f"{SECRET} {basic}")


def test_a_missing_vault_entry_loads_but_fails_the_check_naming_key_and_secret(tmp_path: Path) -> None:
    """The config loads (so `secret set` can add the entry); check_vault_secrets names the key and the entry."""
    path = tmp_path / "agent.toml"
    path.write_text(config_text(tmp_path / "data", 'password_secret = "not_there"'))
    config = load_config(path)
    with pytest.raises(ConfigError) as info:
        check_vault_secrets(config)
    assert "credentials.svc.password_secret" == info.value.key
    assert "no secret 'not_there' in the vault" in info.value.problem
    assert str(path) == info.value.path


@pytest.mark.parametrize(
    ("credential", "problem"),
    [
        ('password_env = "X"\npassword_secret = "svc_pw"', "set only one of password_env, password_secret"),
        ('token = "inline-token"\ntoken_secret = "t"', "set only one of token, token_secret"),
        ('passphrase_file = "/f"\npassphrase_secret = "p"', "set only one of passphrase_file, passphrase_secret"),
    ],
)
def test_a_vault_secret_beside_another_source_is_refused(tmp_path: Path, credential: str, problem: str) -> None:
    """A secret comes from one source: a vault entry and an environment variable, file or inline value clash."""
    path = tmp_path / "agent.toml"
    path.write_text(config_text(tmp_path / "data", credential))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert ("credentials.svc", problem) == (info.value.key, info.value.problem)


def test_a_bad_vault_entry_name_is_refused_at_load(tmp_path: Path) -> None:
    """password_secret must be a name a vault entry can have."""
    path = tmp_path / "agent.toml"
    path.write_text(config_text(tmp_path / "data", 'password_secret = "a b"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "credentials.svc.password_secret" == info.value.key


def secret_cli(config: Path, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bridgehead.agent.cli", "secret", *args, "--config", str(config)]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)


def test_the_cli_stores_stdin_without_its_newline_even_where_other_sources_are_unset(tmp_path: Path) -> None:
    """`secret set` reads the value from stdin (one trailing newline dropped) although a password_env is unset."""
    config = tmp_path / "agent.toml"
    config.write_text(config_text(tmp_path / "data", 'password_env = "BRIDGEHEAD_TEST_SURELY_UNSET"'))
    stored = secret_cli(config, "set", "svc_pw", stdin=SECRET + "\n")
    assert (0, "") == (stored.returncode, stored.stderr)
    assert SECRET == Vault(tmp_path / "data").get("svc_pw")
    listed = secret_cli(config, "list", stdin="")
    assert (0, True, False) == (listed.returncode, listed.stdout.startswith("svc_pw\tset "), SECRET in listed.stdout)


def test_the_cli_refuses_an_empty_value(tmp_path: Path) -> None:
    """An empty standard input (or a lone newline) stores nothing and exits 2."""
    config = tmp_path / "agent.toml"
    config.write_text(config_text(tmp_path / "data", ""))
    refused = secret_cli(config, "set", "svc_pw", stdin="\n")
    assert (2, False) == (refused.returncode, (tmp_path / "data" / VAULT_FILE).exists())
    assert "the value on standard input is empty" in refused.stderr
