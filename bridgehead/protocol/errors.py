"""Errors of the wire protocol.

    ProtocolError            a frame broke the contract; close this one connection
    ├── MessageTooLarge      the frame is over the negotiated byte limit (close code 1009)
    └── UnexpectedMessage    a well-formed message at the wrong point of the session

Each carries a stable ``code`` (sent in the ``error`` frame and the close reason) and the
websocket ``close_code`` to use. Neither side ever lets one of these escape a connection.
"""

from __future__ import annotations

# Websocket close codes (RFC 6455 section 7.4.1, plus the private range 4000-4999).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_UNSUPPORTED_VERSION = 4001
CLOSE_AUTH_FAILED = 4003
CLOSE_REPLACED = 4004
CLOSE_AGENT_LOST = 4005


class ProtocolError(Exception):
    """A frame that breaks the protocol; the connection it came on must close."""

    close_code = CLOSE_PROTOCOL_ERROR

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def close_reason(self) -> str:
        # RFC 6455 caps the close reason at 123 bytes of UTF-8.
        return str(self).encode()[:123].decode(errors="ignore")


class MessageTooLarge(ProtocolError):
    close_code = CLOSE_TOO_BIG

    def __init__(self, size: int, limit: int) -> None:
        super().__init__("message_too_large", f"frame of {size} bytes is over the {limit}-byte limit")
        self.size = size
        self.limit = limit


class UnexpectedMessage(ProtocolError):
    def __init__(self, message_type: str, state: str) -> None:
        super().__init__("unexpected_message", f"'{message_type}' is not allowed while {state}")
