"""Reading a TOML configuration file and naming the key a structure check refused. Shared by
every configuration file of the project (agent, control plane, sandbox), so that a fault reads
the same whichever program reports it: ``FILE: dotted.key: problem``."""

from __future__ import annotations

import re
import tomllib
from typing import Any, TypeVar

import msgspec

from bridgehead.core.errors import ConfigError

T = TypeVar("T")

_AT = re.compile(r"^(?P<problem>.*?)(?: - at (?P<inkey>`key` in )?`\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<field>[^`]+)`$")


def read_toml(path: str) -> dict[str, Any]:
    """A TOML file's tables; ``ConfigError`` naming the file and the fault otherwise."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except PermissionError:
        raise ConfigError(path, "", "permission denied") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None


def split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    """Turn msgspec's 'Expected `int`, got `str` - at `$.agent.max_concurrent_jobs`' into
    (dotted key, problem); an unknown or missing field is named in the key itself."""
    match = _AT.match(str(exc))
    if not match:
        return "", str(exc)
    path = (match.group("path") or "").lstrip(".")
    problem = match.group("problem")
    field = _FIELD.match(problem)
    if field:
        path = f"{path}.{field.group('field')}".lstrip(".")
        problem = "unknown key (is it misspelt?)" if "unknown" in problem else "required key is missing"
    elif match.group("inkey"):
        problem = f"table name: {problem}"
    return path, problem


def convert(value: Any, kind: type[T], path: str, prefix: str = "") -> T:
    """Check ``value`` (a table read by ``read_toml``) against ``kind``; a fault becomes a
    ``ConfigError`` naming the file and the dotted key, ``prefix`` first."""
    try:
        return msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError as exc:
        key, problem = split_validation_error(exc)
        raise ConfigError(path, ".".join(p for p in (prefix, key) if p), problem) from None
