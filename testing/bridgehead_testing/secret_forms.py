"""A fake secret whose every encoded form differs from the others, and those forms: what the
redaction tests put into logs, errors and records and then look for everywhere.

Written out here rather than taken from ``bridgehead.core.redact``, so that a form dropped
there is a form the tests still expect.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

# 26 bytes (not a multiple of 3, so base64 has padding), with a space, "/" and "+" (the three
# URL encodings differ), '"' and a non-ASCII letter (the JSON escapes differ), and bytes whose
# base64 holds "+" (base64url differs). No "'" or "\" so that it can be put in SQL literals.
SECRET = 'Pa ss/w+rd"é-9f2c&x=1?>~q'  # noqa: S105 - a fake secret, looked for in every file


def encoded_forms(secret: str = SECRET) -> dict[str, str]:
    """Every form of ``secret`` the redactor claims to mask, by a URL-safe name."""
    raw = secret.encode()
    b64, b64url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    return {
        "plain": secret,
        "base64": b64,
        "base64-unpadded": b64.rstrip("="),
        "base64url": b64url,
        "base64url-unpadded": b64url.rstrip("="),
        "url": quote(secret, safe=""),
        "url-keeping-slash": quote(secret),
        "url-plus": quote_plus(secret),
        "hex": raw.hex(),
        "hex-upper": raw.hex().upper(),
        "json": json.dumps(secret)[1:-1],
        "json-utf8": json.dumps(secret, ensure_ascii=False)[1:-1],
        # A JSON request body echoed inside a JSON answer (httpbin's /anything): escaped twice.
        "json-twice": json.dumps(json.dumps(secret))[3:-3],
        # PHP's encoder writes "/" as "\/".
        "json-escaped-slash": json.dumps(secret)[1:-1].replace("/", "\\/"),
    }


def basic_auth(user: str, secret: str = SECRET) -> str:
    """The base64 of ``user:secret`` that an ``Authorization: Basic`` header carries."""
    return base64.b64encode(f"{user}:{secret}".encode()).decode()
