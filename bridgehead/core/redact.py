"""Keeping secret values out of logs, error messages and records.

Secrets are registered when they are resolved (credentials, tokens); every log record
passes through ``RedactingFilter``, every error message that leaves the agent through
``REDACTOR.redact``, and plugins that echo what a target answered (rest) through
``REDACTOR.redact_bytes``: each registered value is replaced with ``***``.

A secret travels in more than one spelling, so each is registered in every form it takes
on the wire: as is, base64 (HTTP basic auth sends base64 of ``user:password``, registered
by ``add_basic_auth``), URL-encoded (``quote`` and ``quote_plus``), hex, and each of those
JSON-escaped once or twice.
All forms go into one compiled alternation, longest first, so redacting costs one pass.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values would mask ordinary words and numbers everywhere; secrets that short are
# rejected by config validation anyway.
MIN_SECRET_LENGTH = 4


def encoded_forms(secret: str) -> set[str]:
    """``secret`` as it may appear in a request, a URL, a JSON document or a hex dump."""
    raw = secret.encode()
    b64 = base64.b64encode(raw).decode("ascii")
    b64url = base64.urlsafe_b64encode(raw).decode("ascii")
    forms = {
        secret,
        # Also without padding: the same bytes inside a longer base64 text end differently.
        b64,
        b64.rstrip("="),
        b64url,
        b64url.rstrip("="),
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        raw.hex(),
        raw.hex().upper(),
    }
    # Each of those inside a JSON string, and that once more: a target that echoes a JSON
    # request body inside its JSON answer (as httpbin's /anything does) escapes it twice.
    # Some encoders (PHP's) also write "/" as "\/".
    for _ in range(2):
        escaped = {json.dumps(form, ensure_ascii=only_ascii)[1:-1] for form in forms for only_ascii in (True, False)}
        forms |= escaped | {form.replace("/", "\\/") for form in escaped}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Redactor:
    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._bytes_pattern: re.Pattern[bytes] | None = None
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        """Mask ``secret`` and its encoded forms from now on."""
        if not secret or len(secret) < MIN_SECRET_LENGTH or secret in self._secrets:
            return
        with self._lock:
            self._secrets.add(secret)
            self._forms |= encoded_forms(secret)
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
            self._bytes_pattern = re.compile(b"|".join(re.escape(s.encode()) for s in ordered))

    def add_basic_auth(self, username: str, password: str) -> None:
        """Mask the base64 of ``username:password``, the form HTTP basic auth sends."""
        self.add(base64.b64encode(f"{username}:{password}".encode()).decode("ascii"))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text

    def redact_bytes(self, data: bytes | bytearray) -> bytes | bytearray:
        """``data`` with every form of every secret masked; the same object when none is in it."""
        pattern = self._bytes_pattern
        if pattern is None or pattern.search(data) is None:
            return data
        return pattern.sub(MASK.encode(), data)


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """Formats the message once, masks secrets in it and in any exception text."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # The formatter prints exc_text when exc_info is gone: keep only the masked text.
            record.exc_text = self.redactor.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        return True
