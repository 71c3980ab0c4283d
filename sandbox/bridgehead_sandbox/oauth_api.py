"""``POST /oauth_token.do``: the OAuth 2.0 token endpoint (SERVICENOW_API.md §4.2).

The body must be form-encoded (an instance does not take JSON here). Client credentials come
in the form (``client_id``, ``client_secret``) as ServiceNow documents, or in an HTTP Basic
header as RFC 6749 §2.3.1 also allows.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from bridgehead_sandbox.auth import OAuthFailure, failure_body
from bridgehead_sandbox.limits import read_body
from bridgehead_sandbox.responses import json_response

if TYPE_CHECKING:
    from bridgehead_sandbox.app import Sandbox

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def token(self, request: Request) -> Response:
        limits = self.sandbox.config.limits
        style = self.sandbox.config.oauth.error_style
        try:
            if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                raise OAuthFailure(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
            raw = await read_body(request, limits.max_body_bytes, limits.oversize_status)
            form = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            _client_from_basic(request.headers.get("authorization", ""), form)
            body = self.sandbox.auth.grant(form, str(request.url.replace(query="")))
        except OAuthFailure as failure:
            return json_response(failure_body(failure, style), failure.status, NO_STORE)
        return json_response(body, 200, NO_STORE)


def _client_from_basic(authorization: str, form: dict[str, str]) -> None:
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic" or "client_id" in form:
        return
    try:
        client_id, sep, secret = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthFailure(401, "invalid_client", "the Authorization header is not valid Basic credentials") from None
    if sep:
        form["client_id"] = urllib.parse.unquote_plus(client_id)
        form["client_secret"] = urllib.parse.unquote_plus(secret)
