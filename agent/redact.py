"""Keeping secret values out of logs and error messages.

Secrets are registered when they are resolved (credentials, tokens); every log record
passes through ``RedactingFilter`` and every error message that leaves the agent through
``REDACTOR.redact``, which replaces each registered value with ``***``.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
# Shorter values would mask ordinary words and numbers everywhere; secrets that short are
# rejected by config validation anyway.
MIN_SECRET_LENGTH = 4


class Redactor:
    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_SECRET_LENGTH or secret in self._secrets:
            return
        with self._lock:
            self._secrets.add(secret)
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text


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
