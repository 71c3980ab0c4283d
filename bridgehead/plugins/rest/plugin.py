"""``RestPlugin``: checks a job against its profile, sends it, and emits its records."""

from __future__ import annotations

import base64
import dataclasses
import re

import msgspec

from bridgehead.plugins.rest.client import Response, SessionPool, fetch
from bridgehead.plugins.rest.params import SAFE_TO_REPEAT_METHODS, RestParams, RestProfile
from bridgehead.plugins.rest.records import item_record, items_at, response_record
from bridgehead.plugins.rest.urls import build_url
from bridgehead.sdk import (
    Credential,
    JobContext,
    JobError,
    Plugin,
    PolicyDenied,
    SourceError,
    redact,
    redact_bytes,
    register_secret,
)

_PROGRESS_EVERY = 10_000
_SNIPPET_CHARS = 200
# The request must time out a little before the job does, so that the job fails with this
# plugin's "timeout" error naming the request rather than being cut off mid-way.
_DEADLINE_MARGIN_S = 0.05


class RestPlugin(Plugin[RestParams, RestProfile]):
    name = "rest"
    version = "1"
    params_type = RestParams
    profile_type = RestProfile
    safe_to_repeat = True  # refined per method by is_safe_to_repeat

    def __init__(self) -> None:
        self._sessions = SessionPool()

    def is_safe_to_repeat(self, params: RestParams) -> bool:
        return params.method in SAFE_TO_REPEAT_METHODS

    def check_policy(self, profile: RestProfile, params: RestParams) -> None:
        if profile.allowed_methods is not None and params.method not in profile.allowed_methods:
            allowed = ", ".join(profile.allowed_methods) or "none"
            raise PolicyDenied(f"connection {params.connection!r} allows methods {allowed}, not {params.method}")
        build_url(profile.base_url, params.path, params.query)

    async def run(self, ctx: JobContext[RestProfile], params: RestParams) -> None:
        profile = ctx.profile
        # Checked again here: whoever calls run(), a job must never reach outside its profile.
        self.check_policy(profile, params)
        target = build_url(profile.base_url, params.path, params.query)
        timeout_s = min(params.timeout_s or profile.timeout_s, ctx.remaining_s - _DEADLINE_MARGIN_S)
        if timeout_s <= 0:
            raise JobError(f"{params.method} {target.display}: no time left for the request", code="timeout")
        headers = {**profile.headers, **params.headers}
        body: bytes | None = None
        if params.json is not msgspec.UNSET:
            body = msgspec.json.encode(params.json)
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        authorization = _authorization(ctx.credential)
        if authorization is not None:
            # The profile's credential wins over any Authorization a job or profile header gives.
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = authorization
            # Already registered when the agent resolved the credential; not when a test or
            # another host drives the plugin with a Credential of its own.
            for secret in _secrets(ctx.credential, authorization):
                register_secret(secret)

        safe = self.is_safe_to_repeat(params)
        response = await fetch(
            self._sessions.get(params.connection, profile, ctx.log),
            params.method,
            target,
            headers=headers,
            body=body,
            timeout_s=timeout_s,
            max_bytes=profile.max_response_bytes,
            retry_safe=safe,
        )
        response = _redacted(response)
        ctx.log.debug("%s %s -> %d", params.method, target.display, response.status)
        ok = 200 <= response.status < 300
        if not ok and params.fail_on_status:
            raise _status_error(params.method, target.display, response, safe, _secrets(ctx.credential, authorization))
        if params.records_path is None or not ok:
            # An error answer has no records_path to follow: it is recorded whole, as documented.
            await ctx.emit(
                response_record(
                    response.status, response.headers, response.content_type, response.charset, response.body
                )
            )
            return
        await _emit_items(ctx, response.body, params.records_path)

    async def aclose(self) -> None:
        await self._sessions.aclose()


async def _emit_items(ctx: JobContext[RestProfile], body: bytearray, records_path: str) -> None:
    items = items_at(body, records_path)
    total = len(items)
    for n, raw in enumerate(items, 1):
        await ctx.emit(item_record(raw))  # one at a time, so backpressure reaches this loop
        if n % _PROGRESS_EVERY == 0:
            ctx.progress(n, total)


def _authorization(credential: Credential | None) -> str | None:
    if credential is None:
        return None
    if credential.token:
        return f"Bearer {credential.token}"
    if credential.username is not None and credential.password is not None:
        # RFC 7617 allows UTF-8; aiohttp's BasicAuth would default to latin-1.
        pair = f"{credential.username}:{credential.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return None


def _redacted(response: Response) -> Response:
    """``response`` with every registered secret masked, in any of its forms: a target that
    echoes the request (its Authorization header, a password in a form) must not put one of
    the agent's secrets into a record. One regex pass over the body; no copy when none is in it."""
    body = redact_bytes(response.body)
    return dataclasses.replace(
        response,
        reason=redact(response.reason),
        headers=[(name, redact(value)) for name, value in response.headers],
        body=response.body if body is response.body else bytearray(body),
    )


def _status_error(method: str, display: str, response: Response, retry_safe: bool, secrets: list[str]) -> SourceError:
    # 429 means "not done, come back later"; a 5xx may have done part of the work, so only
    # methods that are safe to repeat retry it.
    retryable = response.status == 429 or (response.status >= 500 and retry_safe)
    # The start of the body usually says what went wrong. Our own secrets are masked should
    # the server echo them (the agent's redactor does so too); the window is widened by the
    # longest secret so that none is cut in half and half shown.
    window = _SNIPPET_CHARS * 4 + max((len(s) for s in secrets), default=0)
    text = response.body[:window].decode("utf-8", "replace")
    for secret in secrets:
        text = text.replace(secret, "***")
    snippet = re.sub(r"\s+", " ", text).strip()[:_SNIPPET_CHARS]
    detail = f": {snippet}" if snippet else ""
    return SourceError(
        f"{method} {display} answered HTTP {response.status} {response.reason}{detail}",
        code="http_status",
        retryable=retryable,
    )


def _secrets(credential: Credential | None, authorization: str | None) -> list[str]:
    """What ``authorization`` reveals: the header, the token or password, and for basic
    auth the base64 of ``user:password`` (the form the header carries)."""
    values = [authorization] if authorization else []
    if credential is not None:
        values += [v for v in (credential.token, credential.password) if v]
        if credential.username and credential.password:
            values.append(base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode("ascii"))
    return values
