"""Logging setup shared by both commands: text or JSON lines on stderr, secrets masked.

Every line goes through one handler with ``RedactingFilter``. What Python would otherwise
write to stderr on its own, past that filter, is routed through it too: warnings
(``logging.captureWarnings``) and the tracebacks of exceptions nobody caught, in the main
thread or any other (a plugin's own thread, say), whose message may carry a secret.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from types import TracebackType

from bridgehead.core.redact import REDACTOR, RedactingFilter

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_log = logging.getLogger("bridgehead")


def _redacted(value: object) -> object:
    """``value`` with every secret masked, for a JSON line: strings masked, containers walked,
    anything else (which ``json.dumps`` would print with ``str``) turned into masked text."""
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {REDACTOR.redact(str(k)): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(v) for v in value]
    return REDACTOR.redact(str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Fields a caller passed in ``extra`` are not part of the message the filter masked.
        doc.update({k: _redacted(v) for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, default=str)


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException | None, tb: TracebackType | None, where: str
) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc or exc_type(), tb)
        return
    _log.critical("uncaught exception in %s", where, exc_info=(exc_type, exc or exc_type(), tb))


def _main_thread_hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    _log_uncaught(exc_type, exc, tb, "the main thread")


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # what threading's own hook ignores too
        return
    name = args.thread.name if args.thread is not None else "a thread"
    _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback, f"thread {name!r}")


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python's default hooks write these straight to stderr, where no filter masks them.
    logging.captureWarnings(True)
    sys.excepthook = _main_thread_hook
    threading.excepthook = _thread_hook
