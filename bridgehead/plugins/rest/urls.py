"""Confining a job's ``path`` to its profile's ``base_url`` (pure; no I/O).

A profile is the admin's statement of what the agent may reach, so a job must not be able
to leave it: not by an absolute URL, not by ``//host``, and not by ``..`` segments climbing
above the base path, in whatever form a server might decode them (``%2e%2e``, ``..%2f``,
``..\\``, ``..;``). Literal dot segments that stay inside are resolved before sending, as
curl does. The URL is built here, once, as a fully encoded string, and sent exactly
so (aiohttp is told not to re-encode or normalise it), so what was checked is what is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlencode, urlsplit

from bridgehead.plugins.rest.params import QueryValue
from bridgehead.sdk import InvalidParams, PolicyDenied

# Characters RFC 3986 allows in a path or query as they are; everything else is %-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=~"
_QUERY_SAFE = _PATH_SAFE + "?"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True, slots=True)
class Target:
    url: str  # fully encoded, sent as is
    display: str  # origin and path without the query (which may hold tokens), for messages


def build_url(base_url: str, path: str, query: Mapping[str, QueryValue]) -> Target:
    """The URL a job asks for, or ``PolicyDenied`` if it would leave ``base_url``."""
    if _CONTROL.search(path):
        raise InvalidParams("path has control characters")
    if "#" in path:
        raise InvalidParams("path may not have a #fragment")
    if _BAD_ESCAPE.search(path):
        raise InvalidParams("path has a '%' that does not start a %XX escape")
    rel_path, _, raw_query = path.partition("?")
    if _SCHEME.match(rel_path):
        raise PolicyDenied(f"path {rel_path!r} is an absolute URL; jobs give a path under the base_url")
    if rel_path[:2].replace("\\", "/") == "//":
        raise PolicyDenied(f"path {rel_path!r} names another host; jobs give a path under the base_url")
    if _climbs_above_start(rel_path):
        raise PolicyDenied(f"path {rel_path!r} climbs above the connection's base_url with '..'")

    base = urlsplit(base_url)
    prefix = base.path.rstrip("/")
    full_path = prefix + "/" + quote(_remove_dot_segments(rel_path.lstrip("/")), safe=_PATH_SAFE)
    query_parts = [quote(raw_query, safe=_QUERY_SAFE)] if raw_query else []
    if query:
        query_parts.append(urlencode(list(_query_pairs(query)), quote_via=quote))
    origin = f"{base.scheme}://{base.netloc}"
    url = origin + full_path + ("?" + "&".join(query_parts) if query_parts else "")

    # Belt and braces: whatever the steps above missed, the result must parse back to the
    # profile's origin and path prefix.
    check = urlsplit(url)
    if (check.scheme, check.netloc) != (base.scheme, base.netloc) or not check.path.startswith(prefix + "/"):
        raise PolicyDenied(f"path {rel_path!r} does not stay under the connection's base_url")
    return Target(url=url, display=origin + full_path)


def _climbs_above_start(path: str) -> bool:
    """Would any reading of ``path`` go above where it starts with ``..``?

    Servers differ in what they decode before resolving dot segments, so take the most
    permissive reading: %-decode until nothing changes, treat ``\\`` as ``/``, drop ``;params``
    (Tomcat reads ``..;`` as ``..``). Empty segments are not counted, which only makes this
    stricter than RFC 3986.
    """
    decoded = path
    for _ in range(4):  # double or triple encoding is an attack, not a real path
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    depth = 0
    for segment in re.split(r"[/\\]", decoded):
        name = segment.split(";", 1)[0]
        if name in ("", "."):
            continue
        depth += -1 if name == ".." else 1
        if depth < 0:
            return True
    return False


def _remove_dot_segments(path: str) -> str:
    """Resolve literal ``.`` and ``..`` as RFC 3986 (and curl) do; servers do not all do it."""
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in (".", ".."):
        kept.append("")  # "a/b/.." is "a/", a directory
    return "/".join(kept)


def _query_pairs(query: Mapping[str, QueryValue]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            # JSON spelling for booleans: APIs expect true/false, not Python's True/False.
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            pairs.append((key, text))
    return pairs
