"""Unit tests of commands as argv (bridgehead/plugins/ssh/argv.py), the PowerShell call encoder
(bridgehead/plugins/powershell/call.py) and the profile keys that choose between a list and a shell."""

from __future__ import annotations

import base64
import re
import shlex
from typing import Any

import msgspec
import pytest

from bridgehead.plugins.powershell.call import Value, call_allowed, call_script, literal, parse_pattern
from bridgehead.plugins.powershell.params import PowershellParams, PowershellProfile
from bridgehead.plugins.ssh.argv import allowed, command_line, matches, to_argv
from bridgehead.plugins.ssh.params import SshParams, SshProfile

HOSTILE = [
    "; touch /tmp/PWNED",
    "&& touch /tmp/PWNED",
    "| touch /tmp/PWNED",
    "`touch /tmp/PWNED`",
    "$(touch /tmp/PWNED)",
    "a\ntouch /tmp/PWNED",
    "'; touch /tmp/PWNED; '",
    '"; touch /tmp/PWNED; "',
    "*",
    "~root",
    "$HOME",
    "> /tmp/PWNED",
    "\\",
    "",
    " leading and trailing ",
    "é 日本 \u2019",
]


def ssh_profile(**keys: Any) -> SshProfile:
    base = {"plugin": "ssh", "host": "h", "host_key": "SHA256:" + "A" * 43}
    return msgspec.convert({**base, **keys}, SshProfile)


def ps_profile(**keys: Any) -> PowershellProfile:
    return msgspec.convert({"plugin": "powershell", "transport": "local", **keys}, PowershellProfile)


# --- argv ----------------------------------------------------------------------------------


def test_a_string_command_is_split_as_a_posix_shell_would() -> None:
    """Quotes group and backslashes escape; nothing is expanded."""
    assert ["df", "-h", "/var log", "$HOME", "a;b"] == to_argv("df -h '/var log' $HOME a\\;b")


def test_a_list_command_is_taken_as_it_is() -> None:
    """A list is already an argv: no splitting, no unquoting."""
    assert ["echo", "a b", "'c'"] == to_argv(["echo", "a b", "'c'"])


@pytest.mark.parametrize("command", ["echo 'unclosed", 'echo "unclosed', "echo trailing\\", "", "   ", []])
def test_a_command_that_is_no_argv_is_refused(command: Any) -> None:
    """An unclosed quote, a dangling backslash or nothing at all cannot be an argv."""
    with pytest.raises(ValueError, match="cannot be split|no program"):
        to_argv(command)


@pytest.mark.parametrize("command", ["echo a\x00b", ["echo", "a\x00b"]])
def test_a_nul_in_an_argument_is_refused(command: Any) -> None:
    """A NUL cannot travel in a command line, so an argument holding one is refused."""
    with pytest.raises(ValueError, match="NUL"):
        to_argv(command)


@pytest.mark.parametrize("argument", HOSTILE)
def test_the_remote_command_line_reads_back_into_the_same_argv(argument: str) -> None:
    """Every argument is quoted: a POSIX shell splits the line into exactly the argv."""
    argv = ["/usr/bin/printf", "%s\\n", argument, "x"]
    assert argv == shlex.split(command_line(argv))


@pytest.mark.parametrize(
    ("pattern", "argv", "expected"),
    [
        ("df -h *", ["df", "-h"], True),
        ("df -h *", ["df", "-h", "/var", "/tmp"], True),
        ("df -h *", ["df"], False),
        ("df -h *", ["df", "-i"], False),
        ("systemctl status *.service", ["systemctl", "status", "ssh.service"], True),
        ("systemctl status *.service", ["systemctl", "status", "a.service", "b.service"], False),
        ("systemctl status *.service", ["systemctl", "status"], False),
        ("uptime", ["uptime"], True),
        ("uptime", ["uptime", "-p"], False),
        ("uptime", ["Uptime"], False),
        ("echo *", ["echo", "; touch /tmp/PWNED"], True),
        ("echo *", ["echo;", "touch"], False),
        ("echo * end", ["echo", "anything", "end"], True),
        ("echo * end", ["echo", "end"], False),
        ("'/opt/my tool' --check", ["/opt/my tool", "--check"], True),
        ("ls [*]", ["ls", "*"], True),
        ("ls [*]", ["ls", "x"], False),
        ("report --day ?*", ["report", "--day", "mon"], True),
        ("report --day ?*", ["report", "--day"], False),
        ("report --day ?*", ["report", "--day", ""], False),
        ("journalctl -n [0-9]*", ["journalctl", "-n", "50"], True),
        ("journalctl -n [0-9]*", ["journalctl", "-n", "x"], False),
        ("df -h *", ["df", "-h;", "id"], False),
        ("*", ["anything"], True),
        ("*", ["anything", "more"], False),
        ("* *", ["anything", "more", "args"], True),
    ],
)
def test_patterns_match_per_argument(pattern: str, argv: list[str], expected: bool) -> None:
    """One glob per argument, the same count, and a final lone * for any further arguments."""
    assert expected == matches(argv, pattern)


def test_a_command_matches_if_any_pattern_allows_it() -> None:
    """The list allows what any one of its patterns allows."""
    patterns = ["uptime", "df -h *"]
    assert [True, True, False] == [allowed(a, patterns) for a in (["uptime"], ["df", "-h"], ["id"])]


# --- ssh profile and params -----------------------------------------------------------------


def test_allow_shell_with_allowed_commands_is_refused() -> None:
    """A shell runs any program, so a profile cannot have both."""
    with pytest.raises(msgspec.ValidationError, match="allow_shell = true cannot go with allowed_commands"):
        ssh_profile(allow_shell=True, allowed_commands=["uptime"])


def test_a_pattern_that_cannot_be_split_is_refused_at_load() -> None:
    """A broken pattern is the admin's mistake, reported when the profile loads."""
    with pytest.raises(msgspec.ValidationError, match="cannot be split"):
        ssh_profile(allowed_commands=["echo 'unclosed"])


def test_the_remote_line_is_quoted_unless_the_profile_allows_a_shell() -> None:
    """A string is a shell line only with allow_shell; a list is always quoted."""
    line = "echo a | tr a b"
    assert "echo a '|' tr a b" == ssh_profile().remote_command(line)
    assert line == ssh_profile(allow_shell=True).remote_command(line)
    assert "echo 'a | b'" == ssh_profile(allow_shell=True).remote_command(["echo", "a | b"])


def test_with_an_allow_list_only_allowed_env_names_may_be_set() -> None:
    """A variable such as LD_PRELOAD could run code of its own: none without allowed_env."""
    listed = ssh_profile(allowed_commands=["env"])
    assert [False, False] == [listed.allows_env("BH_MODE"), listed.allows_env("LD_PRELOAD")]
    opened = ssh_profile(allowed_commands=["env"], allowed_env=["BH_*"])
    assert [True, False] == [opened.allows_env("BH_MODE"), opened.allows_env("LD_PRELOAD")]
    assert ssh_profile().allows_env("LD_PRELOAD")


def test_ssh_params_take_a_list_or_a_string() -> None:
    """Both forms decode; a NUL in any argument is refused."""
    assert ["df", "-h"] == msgspec.convert({"connection": "c", "command": ["df", "-h"]}, SshParams).command
    assert "df -h" == msgspec.convert({"connection": "c", "command": "df -h"}, SshParams).command
    with pytest.raises(msgspec.ValidationError, match="NUL"):
        msgspec.convert({"connection": "c", "command": ["df", "a\x00"]}, SshParams)


# --- PowerShell calls ---------------------------------------------------------------------

_LINE = re.compile(
    r"^\$bhParameters\['(?P<name>[A-Za-z][A-Za-z0-9]*)'\] = "
    r"\[System\.Text\.Encoding\]::UTF8\.GetString\(\[System\.Convert\]::FromBase64String\('(?P<b64>[A-Za-z0-9+/=]*)'\)\)$"
)


@pytest.mark.parametrize("value", [*HOSTILE, "it's", "\u2018quoted\u2019", "${env:SECRET}", "@(1)", "#comment"])
def test_a_hostile_string_value_travels_only_as_base64(value: str) -> None:
    """The script is fixed text around a base64 literal that decodes to the exact value."""
    lines = call_script("Get-Service", {"Name": value}).split("\n")
    assert "$bhParameters = @{}" == lines[0]
    assert "Get-Service @bhParameters" == lines[2]
    found = _LINE.match(lines[1])
    assert found is not None, lines[1]
    assert ("Name", value) == (found["name"], base64.b64decode(found["b64"]).decode("utf-8"))


def test_numbers_booleans_and_lists_are_literals() -> None:
    """Numbers and booleans as PowerShell literals, lists as @(...) of them."""
    values: list[Value] = [True, False, 42, -7, 0.5, 1e20, [1, True], []]
    expected = ["$true", "$false", "42", "-7", "[double]'0.5'", "[double]'1e+20'", "@(1, $true)", "@()"]
    assert expected == [literal(v) for v in values]


@pytest.mark.parametrize(
    "params",
    [
        {"command": "Get-Service; Stop-Computer"},
        {"command": "Get-Service", "parameters": {"Name; x": "a"}},
        {"command": "Get-Service", "parameters": {"Na-me": "a"}},
        {"command": "-Get"},
        {"command": "Get-Service", "parameters": {"Name": "a\x00b"}},
        {"command": "Get-Service", "script": "Get-Date"},
        {"script": "Get-Date", "parameters": {"Name": "a"}},
        {},
    ],
)
def test_calls_that_do_not_hold_together_are_refused(params: dict[str, Any]) -> None:
    """Names outside the strict forms, a NUL, or neither or both of command and script."""
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"connection": "c", **params}, PowershellParams)


@pytest.mark.parametrize(
    ("command", "names", "expected"),
    [
        ("Get-Service", [], True),
        ("get-service", ["name"], True),
        ("Get-Service", ["Name", "ComputerName"], False),
        ("Stop-Service", ["Name"], False),
        ("Get-Process", ["Id", "Name"], True),
        ("Get-Date", ["Format"], False),
        ("Get-Date", [], True),
    ],
)
def test_call_patterns_match_the_command_and_its_parameter_names(
    command: str, names: list[str], expected: bool
) -> None:
    """A command name glob and the parameter names it may take, case-insensitively, or * for any."""
    patterns = ["Get-Service -Name", "Get-Process *", "Get-Date"]
    assert expected == call_allowed(command, names, patterns)


def test_a_call_pattern_must_name_a_command_and_parameters() -> None:
    """Words that are neither are refused with the pattern named."""
    assert ("get-service", ("name",), False) == parse_pattern("Get-Service -Name")
    for bad in ("", "-Name", "Get-Service Name", "Get-Service; Stop"):
        with pytest.raises(ValueError, match="allowed_commands pattern"):
            parse_pattern(bad)


def test_allow_scripts_with_allowed_commands_is_refused() -> None:
    """A script runs any command, so a profile cannot have both; allow_shell is not PowerShell's key."""
    with pytest.raises(msgspec.ValidationError, match="allow_scripts = true cannot go with allowed_commands"):
        ps_profile(allow_scripts=True, allowed_commands=["Get-Service"])
    with pytest.raises(msgspec.ValidationError, match="takes allow_scripts"):
        ps_profile(allow_shell=True)
    with pytest.raises(msgspec.ValidationError, match="run_as_user: only for transport"):
        ps_profile(transport="psrp", host="win01", run_as_user="nobody")
