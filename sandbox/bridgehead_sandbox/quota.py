"""The transaction quota: an API transaction that runs too long is cancelled, as on an instance.

The base-system quota rules "REST Table API request timeout" and "REST Import Set API request
timeout" cancel inbound REST transactions after **60 seconds** (SERVICENOW_API.md §6.3, SNDocs
``c_DefaultQuotaRules.md``). What the client then gets is described by ServiceNow KB1297438
("Response Returned by a REST Table API That's Cancelled Due to Exceeding a Transaction Quota
Rule"): the body ends with

    "error": {"message": "Transaction cancelled: maximum execution time exceeded",
              "detail": "Transaction cancelled: maximum execution time exceeded Check logs for
                         error trace or enable glide.rest.debug property to verify REST request
                         processing"},
    "status": "failure"

and the status is **200** when the transaction had started running (500 when it never left a
semaphore queue). The sandbox's answer is that envelope alone, status
``quota.cancelled_status`` (200 by default). Work the transaction committed before the cancel
stays (a synchronous transform commits a chunk of rows at a time).

:class:`QuotaLayer` wraps ``/api/...`` inside the session layer (waiting for one's session is
not execution) and outside the injected faults (injected latency counts, as a slow instance's
would).
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridgehead_sandbox.config import QuotaSection
from bridgehead_sandbox.faults import Stats
from bridgehead_sandbox.responses import CONTENT_TYPE, STAND_IN_HEADER

log = logging.getLogger("bridgehead.sandbox.quota")
CANCELLED = "Transaction cancelled: maximum execution time exceeded"
CANCELLED_BODY = msgspec.json.encode(
    {
        "error": {
            "message": CANCELLED,
            "detail": f"{CANCELLED} Check logs for error trace or enable glide.rest.debug property "
            "to verify REST request processing",
        },
        "status": "failure",
    }
)
_STAND_IN = (STAND_IN_HEADER[0].lower().encode(), STAND_IN_HEADER[1].encode())


class QuotaLayer:
    def __init__(self, app: ASGIApp, section: QuotaSection, stats: Stats) -> None:
        self.app = app
        self.section = section
        self.stats = stats
        self.cancelled = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.section.max_execution_s
        if scope["type"] != "http" or limit <= 0 or not scope.get("path", "").startswith("/api/"):
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with asyncio.timeout(limit):
                await self.app(scope, receive, send_tracked)
        except TimeoutError:
            self.cancelled += 1
            log.warning("cancelled %s %s after %.1f s (quota.max_execution_s)", scope["method"], scope["path"], limit)
            if started:  # the answer is on its way already; an instance cuts it off the same way
                return
            status = self.section.cancelled_status
            self.stats.by_status[status] += 1
            headers = [
                (b"content-type", CONTENT_TYPE.encode()),
                (b"content-length", str(len(CANCELLED_BODY)).encode()),
                _STAND_IN,
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": CANCELLED_BODY})
