"""Test doubles for the dispatcher's unit tests: an agent link that collects what it is sent.

A link stands in for a socket (the integration suite covers the real one); the store is the
real in-memory backend. Waiting is on events (what the link was sent), never on time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

import msgspec

from bridgehead.control.dispatch import AgentLink, Dispatcher
from bridgehead.control.store.base import JobRow
from bridgehead.protocol import (
    Accept,
    Complete,
    ErrorInfo,
    HeldJob,
    Hello,
    Offer,
    Records,
    ServerMessage,
    decode_server_frame,
    encode,
)

M = TypeVar("M")
MAX_FRAME = 1 << 20
WAIT_S = 2.0  # a missing frame fails the test this fast; a present one arrives in microseconds


class FakeAgent:
    """One agent session: what the dispatcher sends it, and frames it sends back."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        name: str,
        cluster: str = "c1",
        plugins: set[str] | None = None,
        confirms: bool = False,
    ) -> None:
        """``confirms``: the agent's hello lists the ``confirm`` feature (offers at commit)."""
        self.dispatcher = dispatcher
        self.name = name
        self.sent: list[Any] = []
        self.closed: tuple[int, str] | None = None
        self._arrived = asyncio.Event()
        self.link = AgentLink(
            name=name,
            cluster=cluster,
            session_id=f"{name}-session",
            plugins=plugins if plugins is not None else {"echo", "ldap"},
            credit=0,
            send=self._send,
            close=self._close,
            encode=self._encode,
            send_encoded=self._send_encoded,
            confirms=confirms,
        )

    def _send(self, message: ServerMessage) -> None:
        self.sent.append(message)
        self._arrived.set()

    def _send_encoded(self, frame: bytes) -> None:
        for message in decode_server_frame(frame, MAX_FRAME):
            self._send(message)

    def _encode(self, message: ServerMessage) -> bytes:
        frame = encode(message)
        if len(frame) > MAX_FRAME:
            raise ValueError(f"{len(frame)} bytes is over the frame limit")
        return frame

    def _close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def connect(self, credit: int = 0, jobs: list[HeldJob] | None = None) -> list[Any]:
        """Attach and activate a session, as the gateway does; the welcome's verdicts."""
        hello = Hello(agent=self.name, cluster=self.link.cluster, signature="x", jobs=jobs or [])
        verdicts = self.dispatcher.attach(self.link, hello)
        self.dispatcher.activate(self.link)
        if credit:
            self.link.credit = credit
            self.dispatcher.dispatch(self.link.cluster)
        return verdicts

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.sent if isinstance(m, kind)]

    async def next(self, kind: type[M], after: int = 0) -> M:
        """The first ``kind`` frame past the first ``after`` of them, waiting for it if need be."""

        async def arrived() -> M:
            while len(self.of(kind)) <= after:
                self._arrived.clear()
                await self._arrived.wait()
            return self.of(kind)[after]

        return await asyncio.wait_for(arrived(), WAIT_S)

    # --- frames the agent sends ---------------------------------------------------------------

    def say(self, message: Any) -> None:
        self.dispatcher.handle(self.link, message)

    def accept(self, offer: Offer, safe_to_repeat: bool = False) -> None:
        self.say(Accept(job_id=offer.job_id, attempt=offer.attempt, safe_to_repeat=safe_to_repeat))

    def records(self, offer: Offer, seq: int, *values: int) -> None:
        raw = [msgspec.Raw(msgspec.json.encode({"n": v})) for v in values]
        self.say(Records(job_id=offer.job_id, attempt=offer.attempt, seq=seq, records=raw))

    def complete(self, offer: Offer, status: str = "succeeded", record_count: int = 0, **fields: Any) -> None:
        self.say(
            Complete(
                job_id=offer.job_id,
                attempt=offer.attempt,
                status=status,  # type: ignore[arg-type]
                record_count=record_count,
                **fields,
            )
        )

    def fail(self, offer: Offer, code: str, retryable: bool, record_count: int = 0) -> None:
        error = ErrorInfo(code=code, message=code, retryable=retryable)
        self.complete(offer, "failed", record_count, error=error)


class Ends:
    """Jobs whose end is durable, as the dispatcher announces them (``on_finished``)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.states: dict[str, str] = {}
        self._changed = asyncio.Event()
        dispatcher.on_finished.append(self._finished)

    def _finished(self, job_id: str, state: str) -> None:
        self.states[job_id] = state
        self._changed.set()

    async def of(self, job_id: str) -> JobRow:
        """The stored job once it ended, waiting for its end if need be."""

        async def ended() -> None:
            while job_id not in self.states:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(ended(), WAIT_S)
        job = await self.dispatcher.store.get_job(job_id)
        assert job is not None
        return job


def new_job(job_id: str, plugin: str = "echo", cluster: str = "c1", **fields: Any) -> JobRow:
    return JobRow(
        id=job_id, plugin=plugin, params=fields.pop("params", {}), cluster=cluster, created_at=time.time(), **fields
    )


async def turns(n: int = 20) -> None:
    """Let the event loop run everything that is ready (callbacks of resolved writes included)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def running_job(dispatcher: Dispatcher, safe_to_repeat: bool = False) -> tuple[FakeAgent, Offer]:
    """Job j1, offered to agent "a", which accepted it."""
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=1)
    await dispatcher.submit(new_job("j1"))
    offer = await agent.next(Offer)
    agent.accept(offer, safe_to_repeat)
    return agent, offer
