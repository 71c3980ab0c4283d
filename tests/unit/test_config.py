"""Unit tests of the agent's configuration loading and of secret redaction in logs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.agent.config import AgentConfig, check_profiles, load_config
from bridgehead.core.errors import ConfigError
from bridgehead.core.logs import JsonFormatter
from bridgehead.core.redact import MASK, RedactingFilter, Redactor
from bridgehead.sdk import NoProfile, Profile

MINIMAL = """
[agent]
name = "agent-01"
data_dir = "/var/lib/bridgehead-agent"

[control]
url = "https://control.example.com"
"""


class ApiProfile(Profile):
    """A tiny plugin profile: a required URL and a typed flag."""

    base_url: str
    read_only: bool = False


PROFILE_TYPES: dict[str, type[Profile]] = {"echo": NoProfile, "api": ApiProfile}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> AgentConfig:
    return load_config(write(tmp_path, text))


def config_error(tmp_path: Path, text: str) -> ConfigError:
    """Load ``text`` expecting a ConfigError, and check that its message names the file first."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert str(path) == error.path
    assert str(error).startswith(f"{path}: ")
    return error


def profile_error(tmp_path: Path, text: str) -> ConfigError:
    config = load(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        check_profiles(config, PROFILE_TYPES)
    assert config.path == info.value.path
    assert str(info.value).startswith(f"{config.path}: ")
    return info.value


def unique_secret() -> str:
    return f"s3cret-{uuid.uuid4().hex}"


# --- valid files -------------------------------------------------------------------------


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    """The two required keys and a control URL are enough; everything else has its default."""
    config = load(tmp_path, MINIMAL)
    assert "agent-01" == config.agent.name
    assert "default" == config.agent.cluster
    assert 8 == config.agent.max_concurrent_jobs
    assert Path("/var/lib/bridgehead-agent") == config.data_dir
    assert ["https://control.example.com"] == config.control.all_urls
    assert 4 * 1024 * 1024 == config.limits.max_message_bytes
    assert {} == config.connections
    assert {} == config.credentials
    assert str(tmp_path / "agent.toml") == config.path


def test_full_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example of DESIGN.md (connections, a credential from the environment) loads."""
    monkeypatch.setenv("HR_DB_PASSWORD", unique_secret())
    config = load(
        tmp_path,
        """
[agent]
name = "agent-01"
cluster = "eu"
data_dir = "/var/lib/bridgehead-agent"
max_concurrent_jobs = 16

[control]
urls = ["https://a.example.com", "wss://b.example.com"]

[connections.local_api]
plugin = "rest"
base_url = "http://127.0.0.1:9000"

[connections.hr_db]
plugin = "sql"
connection_string = "Driver={PostgreSQL Unicode};Server=127.0.0.1"
credential = "hr_db"
read_only = true

[credentials.hr_db]
username = "svc"
password_env = "HR_DB_PASSWORD"
""",
    )
    assert ("eu", 16) == (config.agent.cluster, config.agent.max_concurrent_jobs)
    assert ["https://a.example.com", "wss://b.example.com"] == config.control.all_urls
    assert {"local_api", "hr_db"} == set(config.connections)
    assert "HR_DB_PASSWORD" == config.credentials["hr_db"].password_env


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://127.0.0.1", "http://localhost:8080", "http://[::1]:8080", "ws://127.0.0.1:1"],
)
def test_plain_http_on_loopback_is_accepted(tmp_path: Path, url: str) -> None:
    """Plain http:// and ws:// are fine on loopback (development and tests)."""
    config = load(tmp_path, MINIMAL.replace("https://control.example.com", url))
    assert [url] == config.control.all_urls


# --- structural errors -------------------------------------------------------------------


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A path that does not exist gives ConfigError naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}: file not found" == str(info.value)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not TOML gives ConfigError naming the file."""
    error = config_error(tmp_path, MINIMAL + "\n[[[\n")
    assert error.problem.startswith("not valid TOML: ")


def test_wrong_type_names_the_dotted_key(tmp_path: Path) -> None:
    """A string where agent.max_concurrent_jobs wants an integer names that key and the types."""
    error = config_error(tmp_path, MINIMAL.replace('name = "agent-01"', 'name = "agent-01"\nmax_concurrent_jobs = "8"'))
    assert "agent.max_concurrent_jobs" == error.key
    assert "Expected `int`, got `str`" == error.problem
    assert str(error).endswith(": agent.max_concurrent_jobs: Expected `int`, got `str`")


def test_out_of_bounds_value_names_the_key_and_bound(tmp_path: Path) -> None:
    """A value outside its bounds names the key and the bound."""
    error = config_error(tmp_path, MINIMAL.replace('name = "agent-01"', 'name = "agent-01"\nmax_concurrent_jobs = 0'))
    assert "agent.max_concurrent_jobs" == error.key
    assert ">= 1" in error.problem


def test_unknown_key_is_refused_and_named(tmp_path: Path) -> None:
    """A key the agent does not know (a typo) is refused, naming its table and the key."""
    error = config_error(tmp_path, MINIMAL.replace('name = "agent-01"', 'name = "agent-01"\nmax_concurent_jobs = 4'))
    assert ("agent.max_concurent_jobs", "unknown key (is it misspelt?)") == (error.key, error.problem)


def test_unknown_table_is_refused_and_named(tmp_path: Path) -> None:
    """A table the agent does not know is refused, naming it."""
    error = config_error(tmp_path, MINIMAL + "\n[agnet]\nname = 'x'\n")
    assert ("agnet", "unknown key (is it misspelt?)") == (error.key, error.problem)


def test_missing_agent_name_is_named(tmp_path: Path) -> None:
    """A file without agent.name says that agent.name is missing."""
    error = config_error(tmp_path, MINIMAL.replace('name = "agent-01"\n', ""))
    assert ("agent.name", "required key is missing") == (error.key, error.problem)


def test_bad_agent_name_is_named(tmp_path: Path) -> None:
    """An agent name with characters outside the allowed set is refused at agent.name."""
    error = config_error(tmp_path, MINIMAL.replace('"agent-01"', '"agent 01"'))
    assert "agent.name" == error.key


def test_bad_connection_name_is_named(tmp_path: Path) -> None:
    """A connection name with characters outside the allowed set is refused under connections."""
    error = config_error(tmp_path, MINIMAL + '\n[connections."hr db"]\nplugin = "echo"\n')
    assert "connections.hr db" == error.key
    assert "table name" in error.problem


def test_no_control_url_is_refused(tmp_path: Path) -> None:
    """Without control.url or control.urls the agent has nowhere to connect."""
    error = config_error(tmp_path, MINIMAL.replace('url = "https://control.example.com"', ""))
    assert "control.url" == error.key
    assert "set control.url or control.urls" == error.problem


@pytest.mark.parametrize(
    "url",
    [
        "http://control.example.com",
        "ws://10.0.0.5:8080",
        "http://127.0.0.1.example.com",
        "http://localhost.example.com",
        "http://0.0.0.0:80",
    ],
)
def test_plain_http_off_loopback_is_refused(tmp_path: Path, url: str) -> None:
    """Plain http:// and ws:// to a host that is not loopback are refused at control.url."""
    error = config_error(tmp_path, MINIMAL.replace("https://control.example.com", url))
    assert "control.url" == error.key
    assert f"{url!r}: plain" in error.problem
    assert "accepted only on loopback; use https://" in error.problem


def test_plain_http_in_control_urls_is_refused(tmp_path: Path) -> None:
    """A plain-http URL in control.urls is refused at control.urls, after good ones."""
    text = MINIMAL.replace(
        'url = "https://control.example.com"', 'urls = ["https://a.example.com", "http://b.example.com"]'
    )
    error = config_error(tmp_path, text)
    assert "control.urls" == error.key
    assert "'http://b.example.com'" in error.problem


@pytest.mark.parametrize("url", ["ftp://control.example.com", "control.example.com", "https://"])
def test_control_url_without_scheme_or_host_is_refused(tmp_path: Path, url: str) -> None:
    """A control URL must be http(s)/ws(s) and name a host."""
    error = config_error(tmp_path, MINIMAL.replace("https://control.example.com", url))
    assert "control.url" == error.key


def test_backoff_max_below_initial_is_refused(tmp_path: Path) -> None:
    """backoff_max_s must be at least backoff_initial_s."""
    error = config_error(tmp_path, MINIMAL + "backoff_initial_s = 10\nbackoff_max_s = 1\n")
    assert "control.backoff_max_s" == error.key


def test_record_limit_over_half_the_message_limit_is_refused(tmp_path: Path) -> None:
    """One record must fit a message with room to spare."""
    error = config_error(tmp_path, MINIMAL + "\n[limits]\nmax_message_bytes = 131072\nmax_record_bytes = 65537\n")
    assert "limits.max_record_bytes" == error.key


# --- connections and credentials ---------------------------------------------------------


def test_connection_without_plugin_is_refused(tmp_path: Path) -> None:
    """Every connection profile must name its plugin."""
    error = config_error(tmp_path, MINIMAL + '\n[connections.api]\nbase_url = "https://api.example.com"\n')
    assert "connections.api.plugin" == error.key
    assert "missing: name the plugin this profile is for" == error.problem


def test_connection_with_non_string_plugin_is_refused(tmp_path: Path) -> None:
    """The plugin key must be a string."""
    error = config_error(tmp_path, MINIMAL + "\n[connections.api]\nplugin = 3\n")
    assert "connections.api.plugin" == error.key


def test_credential_referenced_but_missing_is_refused(tmp_path: Path) -> None:
    """A profile naming a credential table that does not exist is refused."""
    error = config_error(tmp_path, MINIMAL + '\n[connections.api]\nplugin = "api"\ncredential = "api_token"\n')
    assert "connections.api.credential" == error.key
    assert "no [credentials.api_token] table" == error.problem


def test_password_env_naming_an_unset_variable_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """password_env must name a variable that is set."""
    monkeypatch.delenv("BRIDGEHEAD_TEST_UNSET", raising=False)
    error = config_error(tmp_path, MINIMAL + '\n[credentials.db]\npassword_env = "BRIDGEHEAD_TEST_UNSET"\n')
    assert "credentials.db.password_env" == error.key
    assert "environment variable BRIDGEHEAD_TEST_UNSET is not set" == error.problem


def test_token_env_naming_an_unset_variable_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """token_env is checked like password_env."""
    monkeypatch.delenv("BRIDGEHEAD_TEST_UNSET", raising=False)
    error = config_error(tmp_path, MINIMAL + '\n[credentials.api]\ntoken_env = "BRIDGEHEAD_TEST_UNSET"\n')
    assert "credentials.api.token_env" == error.key


def test_unreadable_password_file_is_refused(tmp_path: Path) -> None:
    """password_file must be readable."""
    missing = tmp_path / "missing-secret"
    error = config_error(tmp_path, MINIMAL + f'\n[credentials.db]\npassword_file = "{missing}"\n')
    assert "credentials.db.password_file" == error.key
    assert f"cannot read {missing}" in error.problem


def test_two_password_sources_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A credential may take its password from one place only."""
    monkeypatch.setenv("BRIDGEHEAD_TEST_PW", unique_secret())
    error = config_error(
        tmp_path, MINIMAL + '\n[credentials.db]\npassword = "inline-pw"\npassword_env = "BRIDGEHEAD_TEST_PW"\n'
    )
    assert "credentials.db" == error.key
    assert "set only one of password, password_env" == error.problem


def test_two_token_sources_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A credential may take its token from one place only."""
    token_file = tmp_path / "token"
    token_file.write_text(unique_secret())
    monkeypatch.setenv("BRIDGEHEAD_TEST_TOKEN", unique_secret())
    error = config_error(
        tmp_path,
        MINIMAL + f'\n[credentials.api]\ntoken_env = "BRIDGEHEAD_TEST_TOKEN"\ntoken_file = "{token_file}"\n',
    )
    assert "credentials.api" == error.key
    assert "set only one of token_env, token_file" == error.problem


def test_too_short_secret_is_refused(tmp_path: Path) -> None:
    """A secret shorter than the redactor's minimum could not be masked, so it is refused."""
    error = config_error(tmp_path, MINIMAL + '\n[credentials.db]\npassword = "abc"\n')
    assert "credentials.db.password" == error.key
    assert "shorter than 4 characters" == error.problem


def test_unknown_credential_key_is_refused(tmp_path: Path) -> None:
    """Credential tables refuse keys they do not know (a typo must not silently drop a secret)."""
    error = config_error(tmp_path, MINIMAL + '\n[credentials.db]\npasword_env = "X"\n')
    assert ("credentials.db.pasword_env", "unknown key (is it misspelt?)") == (error.key, error.problem)


def test_credential_key_of_wrong_type_names_its_table(tmp_path: Path) -> None:
    """A wrongly typed key in a credential table is named with the table's name, not a placeholder."""
    error = config_error(tmp_path, MINIMAL + "\n[credentials.db]\npassword = 1234\n")
    assert "credentials.db.password" == error.key


# --- check_profiles ----------------------------------------------------------------------


def test_profiles_are_parsed_with_their_plugins_types(tmp_path: Path) -> None:
    """Each profile becomes an instance of its plugin's profile_type."""
    config = load(
        tmp_path,
        MINIMAL + '\n[connections.api]\nplugin = "api"\nbase_url = "https://x"\nread_only = true\n'
        '\n[connections.e]\nplugin = "echo"\n',
    )
    assert {"api": ApiProfile(plugin="api", base_url="https://x", read_only=True), "e": NoProfile(plugin="echo")} == (
        check_profiles(config, PROFILE_TYPES)
    )


def test_connection_for_an_unknown_plugin_is_refused(tmp_path: Path) -> None:
    """A profile for a plugin that is not loaded names the plugin and those that are."""
    error = profile_error(tmp_path, MINIMAL + '\n[connections.db]\nplugin = "sql"\n')
    assert "connections.db.plugin" == error.key
    assert "no plugin 'sql' is loaded (loaded: api, echo)" == error.problem


def test_profile_key_of_wrong_type_is_refused(tmp_path: Path) -> None:
    """A profile key is checked against the plugin's profile_type, and named with its connection."""
    error = profile_error(
        tmp_path, MINIMAL + '\n[connections.api]\nplugin = "api"\nbase_url = "https://x"\nread_only = "yes"\n'
    )
    assert "connections.api.read_only" == error.key
    assert "Expected `bool`, got `str`" == error.problem


def test_profile_missing_a_required_key_is_refused(tmp_path: Path) -> None:
    """A profile lacking a key its plugin requires is refused at that connection."""
    error = profile_error(tmp_path, MINIMAL + '\n[connections.api]\nplugin = "api"\n')
    assert ("connections.api.base_url", "required key is missing") == (error.key, error.problem)


def test_profile_with_a_key_its_plugin_does_not_know_is_refused(tmp_path: Path) -> None:
    """NoProfile takes no keys but plugin and credential."""
    error = profile_error(tmp_path, MINIMAL + '\n[connections.e]\nplugin = "echo"\nbase_url = "https://x"\n')
    assert ("connections.e.base_url", "unknown key (is it misspelt?)") == (error.key, error.problem)


# --- redaction ---------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through RedactingFilter into a string, independent of caplog."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"bridgehead.test.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def test_password_from_env_is_masked_in_log_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: tuple[logging.Logger, io.StringIO]
) -> None:
    """A password resolved from the environment is replaced by *** in log lines, as arg and in text."""
    secret = unique_secret()
    monkeypatch.setenv("BRIDGEHEAD_TEST_PW", secret)
    load(tmp_path, MINIMAL + '\n[credentials.db]\nusername = "svc"\npassword_env = "BRIDGEHEAD_TEST_PW"\n')
    logger, out = captured

    logger.info("connecting with %s", secret)
    logger.warning(f"dsn=PWD={secret};UID=svc")

    assert f"INFO connecting with {MASK}\nWARNING dsn=PWD={MASK};UID=svc\n" == out.getvalue()


def test_secrets_from_files_and_inline_are_masked(tmp_path: Path, captured: tuple[logging.Logger, io.StringIO]) -> None:
    """Tokens read from files and inline passwords are registered for masking too."""
    token, password = unique_secret(), unique_secret()
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    load(
        tmp_path,
        MINIMAL + f'\n[credentials.api]\ntoken_file = "{token_file}"\n\n[credentials.db]\npassword = "{password}"\n',
    )
    logger, out = captured

    logger.info("token %s password %s", token, password)

    assert f"INFO token {MASK} password {MASK}\n" == out.getvalue()


def test_secret_is_masked_in_exception_tracebacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: tuple[logging.Logger, io.StringIO]
) -> None:
    """A secret in an exception's message is masked in the logged traceback, which is still there."""
    secret = unique_secret()
    monkeypatch.setenv("BRIDGEHEAD_TEST_PW", secret)
    load(tmp_path, MINIMAL + '\n[credentials.db]\npassword_env = "BRIDGEHEAD_TEST_PW"\n')
    logger, out = captured

    try:
        raise ValueError(f"login failed for password {secret}")
    except ValueError:
        logger.exception("job %s failed", "job-1")

    text = out.getvalue()
    assert secret not in text
    assert text.startswith("ERROR job job-1 failed\nTraceback (most recent call last):\n")
    assert text.endswith(f"ValueError: login failed for password {MASK}\n")


def test_secret_is_masked_in_chained_exception_tracebacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: tuple[logging.Logger, io.StringIO]
) -> None:
    """The secret is masked in every exception of a chain (``raise ... from ...``)."""
    secret = unique_secret()
    monkeypatch.setenv("BRIDGEHEAD_TEST_PW", secret)
    load(tmp_path, MINIMAL + '\n[credentials.db]\npassword_env = "BRIDGEHEAD_TEST_PW"\n')
    logger, out = captured

    try:
        try:
            raise ConnectionError(f"driver said: bad password {secret}")
        except ConnectionError as exc:
            raise RuntimeError(f"could not connect as {secret}") from exc
    except RuntimeError:
        logger.error("failed", exc_info=True)

    text = out.getvalue()
    assert secret not in text
    assert 2 == text.count("Traceback (most recent call last):")
    assert f"ConnectionError: driver said: bad password {MASK}" in text
    assert f"RuntimeError: could not connect as {MASK}" in text


def test_secret_is_masked_in_a_preformatted_exc_text(captured: tuple[logging.Logger, io.StringIO]) -> None:
    """A record that arrives with exc_text already set (and no exc_info) is masked as well."""
    secret = unique_secret()
    from bridgehead.core.redact import REDACTOR

    REDACTOR.add(secret)
    logger, out = captured
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "boom", None, None)
    record.exc_text = f"Traceback (most recent call last):\nValueError: {secret}"
    logger.handle(record)

    assert f"ERROR boom\nTraceback (most recent call last):\nValueError: {MASK}\n" == out.getvalue()


def json_logger() -> tuple[logging.Logger, io.StringIO]:
    """A logger formatted like ``log_format = "json"``: the agent's JsonFormatter behind RedactingFilter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"bridgehead.test.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    return logger, stream


def test_secret_is_masked_in_json_log_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In JSON logs the secret is masked in the message and in the exception text."""
    secret = unique_secret()
    monkeypatch.setenv("BRIDGEHEAD_TEST_PW", secret)
    load(tmp_path, MINIMAL + '\n[credentials.db]\npassword_env = "BRIDGEHEAD_TEST_PW"\n')
    logger, out = json_logger()
    try:
        raise ValueError(f"bad password {secret}")
    except ValueError:
        logger.exception("connect with %s failed", secret)

    doc = json.loads(out.getvalue())
    assert f"connect with {MASK} failed" == doc["message"]
    assert doc["exception"].endswith(f"ValueError: bad password {MASK}")
    assert secret not in out.getvalue()


def test_secret_is_masked_in_json_log_extra_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fields passed with ``extra=`` reach JSON log lines, so a secret in one is masked too."""
    secret = unique_secret()
    monkeypatch.setenv("BRIDGEHEAD_TEST_PW", secret)
    load(tmp_path, MINIMAL + '\n[credentials.db]\npassword_env = "BRIDGEHEAD_TEST_PW"\n')
    logger, out = json_logger()

    logger.warning("connecting", extra={"dsn": f"UID=svc;PWD={secret}"})

    assert f"UID=svc;PWD={MASK}" == json.loads(out.getvalue())["dsn"]


def test_unregistered_text_passes_unchanged(captured: tuple[logging.Logger, io.StringIO]) -> None:
    """Ordinary log lines are not altered."""
    logger, out = captured
    logger.info("nothing %s here %d", "secret-looking", 42)
    assert "INFO nothing secret-looking here 42\n" == out.getvalue()


def test_redactor_masks_a_secret_containing_another_whole() -> None:
    """When one secret contains another, the longer one is masked whole."""
    redactor = Redactor()
    redactor.add("abcd")
    redactor.add("abcdefgh")
    assert f"x {MASK} y {MASK} z" == redactor.redact("x abcdefgh y abcd z")


def test_redactor_ignores_values_too_short_to_mask() -> None:
    """Values under the minimum length (or empty) are not registered: they would mask ordinary words."""
    redactor = Redactor()
    redactor.add("abc")
    redactor.add("")
    redactor.add(None)
    assert "abc is fine" == redactor.redact("abc is fine")


def test_redactor_escapes_regex_characters() -> None:
    """Secrets are matched literally, not as patterns."""
    redactor = Redactor()
    redactor.add("a.b*c")
    assert f"{MASK} axbbbc" == redactor.redact("a.b*c axbbbc")


def test_the_sample_config_passes_the_agents_own_check() -> None:
    """config.sample.toml documents every key: the agent must load every profile in it."""
    agent = Path(sys.executable).with_name("bridgehead-agent")
    sample = Path(__file__).parents[2] / "config.sample.toml"
    done = subprocess.run([str(agent), "check", "--config", str(sample)], capture_output=True, text=True, check=False)
    assert 0 == done.returncode, done.stderr
    assert "win_winrm" in done.stdout and "this_machine" in done.stdout
