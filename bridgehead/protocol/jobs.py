"""The job-level half of the protocol, sans-I/O: sequence numbers, acks, resume and fencing.

An attempt's records are numbered 1, 2, ... (``seq``). The agent sends them in order and may
send a batch again after a reconnect; the control plane keeps the highest seq it holds
durably (``acked_seq``) and acknowledges up to it::

    agent                                        control plane
    records(seq=s, n records) ──────────────▶    s <= acked+1: keep seq acked+1.. (the
                                                 rest were had before); s > acked+1: a gap,
                                                 the session closes (``record_gap``)
                              ◀──────────────    ack(seq=acked), once those records are durable
    complete(record_count=c) ───────────────▶    c must equal acked: every record came first
                              ◀──────────────    complete_ack, once the end is durable

A session that ends mid-attempt resumes on the next one: the hello lists the attempts the
agent holds (``HeldJob``), the welcome answers each with ``continue`` from ``acked_seq`` or
``abandon``. Only the current attempt of a job, held by the agent it was offered to, may add
records or complete; anything else is answered ``abandon`` (it is *fenced*).

Both sides use these rules: the control plane's dispatcher on what arrives, the agent's
stream on the acks and verdicts it gets. Nothing here awaits or touches a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import msgspec

from bridgehead.protocol.errors import ProtocolError
from bridgehead.protocol.messages import Complete, HeldJob, Records, ResumeJob


class RecordGap(ProtocolError):
    """Records or a completion that skip past what was received: some frame was lost."""

    def __init__(self, message: str) -> None:
        super().__init__("record_gap", message)


# --- the control plane's side -----------------------------------------------------------


def fresh_records(job_id: str, attempt: int, acked_seq: int, message: Records) -> list[msgspec.Raw]:
    """The records of ``message`` past ``acked_seq`` (none: all of them were had before).

    Raises ``RecordGap`` if the batch starts past ``acked_seq + 1``.
    """
    expected = acked_seq + 1
    if message.seq > expected:
        raise RecordGap(f"job {job_id} attempt {attempt}: got seq {message.seq}, expected {expected}")
    return message.records[expected - message.seq :]


def check_completion(job_id: str, attempt: int, acked_seq: int, message: Complete) -> None:
    """Raise ``RecordGap`` unless every record of the attempt arrived before its completion."""
    if message.record_count != acked_seq:
        raise RecordGap(
            f"job {job_id} attempt {attempt} completed with {message.record_count} records, {acked_seq} received"
        )


class Holder(Protocol):
    """Who holds a job's current attempt, as the control plane has it on record (the
    dispatcher's running attempt is one; ``HeldBy`` is the plain one)."""

    @property
    def attempt(self) -> int: ...

    @property
    def agent(self) -> str: ...


@dataclass(frozen=True, slots=True)
class HeldBy:
    attempt: int
    agent: str


def is_current(holder: Holder | None, agent: str, attempt: int) -> bool:
    """Fencing: may a frame of ``attempt`` from ``agent`` change the job? Only the current
    attempt, from the agent it was offered to; a stale attempt (requeued since), another
    agent's frame or a job no longer running is answered ``abandon`` instead."""
    return holder is not None and holder.attempt == attempt and holder.agent == agent


def resume_verdict(holder: Holder | None, agent: str, held: HeldJob, acked_seq: int) -> ResumeJob:
    """The welcome's answer to one attempt the agent says it holds.

    ``continue`` (re-send from ``acked_seq``) only for the current attempt, held by this
    agent and not lost in an agent restart (its unsent output is gone with it).
    """
    if held.state != "lost" and is_current(holder, agent, held.attempt):
        return ResumeJob(job_id=held.job_id, attempt=held.attempt, action="continue", acked_seq=acked_seq)
    return ResumeJob(job_id=held.job_id, attempt=held.attempt, action="abandon")


# --- the agent's side -------------------------------------------------------------------


def next_acked(acked: int, ack_seq: int, record_count: int) -> int | None:
    """The new acknowledged seq after an ``ack`` of ``ack_seq`` (None: nothing new).

    An ack never goes back, and never past the records the attempt produced (a confused or
    hostile peer cannot make the agent forget records it never sent).
    """
    if ack_seq <= acked:
        return None
    return min(ack_seq, record_count)


def completion_ready(sent: int, record_count: int) -> bool:
    """A completion may go once every record precedes it on the connection."""
    return sent >= record_count


def resume_from(verdict: ResumeJob | None) -> int | None:
    """Where a held attempt goes on from after a welcome: the acked seq, or None to drop it
    (abandoned, or not mentioned: the control plane no longer wants it)."""
    if verdict is None or verdict.action != "continue":
        return None
    return verdict.acked_seq
