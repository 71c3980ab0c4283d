"""HTTP through aiohttp: one pooled session per connection profile, and error translation.

aiohttp is imported here only, and only when the first rest job runs: it costs about 10 MB
and an idle agent must stay under 45 MB. No aiohttp exception leaves ``fetch``::

    TimeoutError (connect, send or read)      JobError "timeout"
    certificate or TLS handshake failure      JobError "tls_error"
    cannot connect, name not resolved         SourceUnavailable "source_unavailable" (retryable)
    any other aiohttp.ClientError, OSError    SourceError "source_error"

A timeout or a broken connection after the request may have been sent is retryable only
for methods that are safe to repeat: a POST that timed out may have been done already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from bridgehead.plugins.rest.params import RestProfile
from bridgehead.plugins.rest.urls import Target
from bridgehead.sdk import JobError, SourceError, SourceUnavailable

if TYPE_CHECKING:
    import ssl

    import aiohttp

_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    content_type: str
    charset: str | None
    body: bytearray


class SessionPool:
    """One ``aiohttp.ClientSession`` per connection profile, made on first use, kept until ``aclose``.

    Keyed by the profile's name and its settings, so a profile changed by a config reload
    gets a fresh session rather than one with the old TLS settings or limits.
    """

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, bytes], aiohttp.ClientSession] = {}

    def get(
        self,
        connection: str,
        profile: RestProfile,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> aiohttp.ClientSession:
        key = (connection, msgspec.json.encode(profile))
        session = self._sessions.get(key)
        if session is None or session.closed:
            session = _new_session(profile)
            if not profile.verify:
                log.warning("connection %r: TLS certificate verification is off (verify = false)", connection)
            self._sessions[key] = session
        return session

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def _new_session(profile: RestProfile) -> aiohttp.ClientSession:
    import aiohttp  # lazily: see the module docstring

    connector = aiohttp.TCPConnector(limit=profile.max_connections, ssl=_ssl_setting(profile))
    return aiohttp.ClientSession(
        connector=connector,
        # fetch() bounds each request itself (aiohttp's default would be 5 minutes, rounded).
        timeout=aiohttp.ClientTimeout(total=None),
        # Jobs share the session, so cookies one job receives must not ride along on another's.
        cookie_jar=aiohttp.DummyCookieJar(),
        # Proxy variables of the agent's environment must not route jobs elsewhere.
        trust_env=False,
    )


def _ssl_setting(profile: RestProfile) -> ssl.SSLContext | bool:
    if not profile.verify:
        return False
    if profile.ca_file is None:
        return True  # aiohttp's default context: the system's trusted CAs
    import ssl

    try:
        # Only this CA is trusted, not the system's as well: the admin pinned it.
        return ssl.create_default_context(cafile=profile.ca_file)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise JobError(f"cannot load ca_file {profile.ca_file}: {exc.strerror or exc}", code="tls_error") from None


async def fetch(
    session: aiohttp.ClientSession,
    method: str,
    target: Target,
    *,
    headers: Mapping[str, str],
    body: bytes | None,
    timeout_s: float,
    max_bytes: int,
    retry_safe: bool,
) -> Response:
    """Send one request and read its whole body (at most ``max_bytes``); never follows redirects."""
    import aiohttp
    import yarl

    what = f"{method} {target.display}"
    try:
        # asyncio.timeout, not aiohttp's: it fires exactly on time (aiohttp rounds timeouts over
        # 5 s up to a whole second), so the plugin's clearer error beats the job's own deadline.
        async with (
            asyncio.timeout(timeout_s),
            session.request(
                method,
                yarl.URL(target.url, encoded=True),  # sent exactly as urls.build_url checked it
                headers=dict(headers),
                data=body,
                # A redirect could lead anywhere; the profile names the only place jobs may go.
                allow_redirects=False,
            ) as resp,
        ):
            return Response(
                status=resp.status,
                reason=resp.reason or "",
                headers=list(resp.headers.items()),
                content_type=resp.content_type,
                charset=resp.charset,
                body=await _read_limited(resp, max_bytes, what),
            )
    except TimeoutError:  # also what aiohttp's own timeout errors subclass
        raise JobError(
            f"{what}: no complete answer within {timeout_s:g} s", code="timeout", retryable=retry_safe
        ) from None
    except aiohttp.ClientConnectorCertificateError as exc:
        reason = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        raise JobError(
            f"{what}: the server's TLS certificate was not accepted ({reason}); set ca_file to the CA that signed it",
            code="tls_error",
        ) from None
    except aiohttp.ClientSSLError as exc:
        reason = getattr(exc.os_error, "reason", None) or exc.strerror or type(exc.os_error).__name__
        raise JobError(f"{what}: TLS handshake failed ({reason})", code="tls_error") from None
    except aiohttp.ClientConnectorError as exc:
        reason = exc.strerror or type(exc.os_error).__name__
        raise SourceUnavailable(f"{what}: cannot connect ({reason})") from None
    except aiohttp.ClientResponseError as exc:
        raise SourceError(f"{what}: bad response ({exc.status} {exc.message})") from None
    except (aiohttp.ClientError, OSError) as exc:
        retryable = retry_safe and isinstance(exc, aiohttp.ClientConnectionError | OSError)
        raise SourceError(f"{what}: {type(exc).__name__}: {exc}", retryable=retryable) from None


async def _read_limited(resp: aiohttp.ClientResponse, max_bytes: int, what: str) -> bytearray:
    """Read the body in chunks, stopping at ``max_bytes`` (counted after decompression)."""

    def too_large() -> JobError:
        return JobError(
            f"{what}: response body is over the connection's max_response_bytes ({max_bytes})",
            code="response_too_large",
        )

    # A declared length is checked up front, unless compressed (then it says nothing of the size).
    if resp.content_length is not None and resp.content_length > max_bytes and "Content-Encoding" not in resp.headers:
        raise too_large()
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
        if len(body) + len(chunk) > max_bytes:
            raise too_large()
        body += chunk
    return body
