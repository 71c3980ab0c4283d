"""The ``rest`` plugin's job params and connection-profile keys (msgspec structs, no I/O).

Everything here is checked when params or a profile are parsed, so a malformed job fails
with ``invalid_params`` before the plugin runs. Whether a path stays inside the profile's
``base_url`` is checked by ``urls.build_url`` (it needs the profile).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from bridgehead.sdk import Params, Profile

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
QueryScalar = str | int | float | bool
QueryValue = QueryScalar | list[QueryScalar]

# A lost attempt of these may run again elsewhere: repeating them leaves the target as one
# run would (RFC 9110 idempotent methods). POST and PATCH may create or change things twice.
SAFE_TO_REPEAT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

MIB = 1024 * 1024

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE_CHARS = re.compile(r"[\x00\r\n]")
# Headers that frame the request on the wire: letting a job set them would allow request
# smuggling through a proxy in front of the target. aiohttp sets them itself.
_FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade"}
)


def check_headers(headers: Mapping[str, str], *, allow_host: bool) -> None:
    """Raise ``ValueError`` (msgspec turns it into a validation error) for unsafe headers."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP token")
        if _BAD_VALUE_CHARS.search(value):
            raise ValueError(f"header {name!r} has a CR, LF or NUL in its value")
        lowered = name.lower()
        if lowered in _FRAMING_HEADERS:
            raise ValueError(f"header {name!r} is set by the HTTP client and may not be given")
        # A job's Host header could make a reverse proxy route it to another site behind the
        # same address: the profile's admin may set it, a job may not.
        if lowered == "host" and not allow_host:
            raise ValueError("header 'Host' may only be set in the connection profile")


class RestParams(Params):
    """Params of one ``rest`` job; see docs/plugins/rest.md."""

    connection: str
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
    method: Method = "GET"
    query: dict[str, QueryValue] = {}
    headers: dict[str, str] = {}
    # UNSET rather than None so that a JSON ``null`` body can still be sent on purpose.
    json: Any = msgspec.UNSET
    records_path: Annotated[str, msgspec.Meta(pattern=r"^[^.]+(\.[^.]+)*$", max_length=512)] | None = None
    fail_on_status: bool = False
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] | None = None

    def __post_init__(self) -> None:
        check_headers(self.headers, allow_host=False)


class RestProfile(Profile):
    """Keys of a ``[connections.NAME]`` table with ``plugin = "rest"``."""

    base_url: str
    headers: dict[str, str] = {}
    ca_file: str | None = None
    verify: bool = True
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 30.0
    max_response_bytes: Annotated[int, msgspec.Meta(gt=0)] = 64 * MIB
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16
    allowed_methods: list[Method] | None = None

    def __post_init__(self) -> None:
        check_base_url(self.base_url)
        check_headers(self.headers, allow_host=True)
        if self.ca_file is not None and not self.verify:
            raise ValueError("ca_file and verify = false contradict each other; keep one")


def check_base_url(base_url: str) -> None:
    """Raise ``ValueError`` unless ``base_url`` is a plain http(s) URL: the jobs' only target."""
    if _BAD_VALUE_CHARS.search(base_url) or any(c.isspace() for c in base_url):
        raise ValueError("base_url has whitespace or control characters")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"base_url must start with http:// or https://, not {parts.scheme or 'nothing'}")
    if not parts.hostname:
        raise ValueError("base_url has no host")
    # Secrets in the URL would end up in logs and error messages; they belong in a credential.
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url may not hold a user name or password; name a credential instead")
    if parts.query or parts.fragment or base_url.endswith(("?", "#")):
        raise ValueError("base_url may not have a query or fragment")
    _ = parts.port  # raises ValueError for a port that is not a number in range
