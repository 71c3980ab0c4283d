"""Keeping secrets out of what a plugin sends back: the agent's redactor, as plugins see it.

The agent registers every value of a resolved credential before the job starts, and masks
them in its log lines and in the error messages that leave it. A plugin needs these only
for what the agent cannot know: a secret it derives or receives (a session token a login
answered), and text from the target it passes on as records (``rest`` redacts the answer it
records, since a target may echo the request's credentials back).
"""

from __future__ import annotations

from bridgehead.core.redact import REDACTOR


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` from now on, in every spelling it takes on the wire (as is, base64,
    URL-encoded, hex, JSON-escaped) and in every log line. Values under 4 characters are
    ignored: masking them would mask ordinary words."""
    REDACTOR.add(secret)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    return REDACTOR.redact(text)


def redact_bytes(data: bytes | bytearray) -> bytes | bytearray:
    """``data`` with every registered secret replaced by ``***``: new ``bytes``, or ``data``
    itself (no copy) when no secret is in it."""
    return REDACTOR.redact_bytes(data)
