"""One pass of the agent's writer: what is ready to send, encoded, in the order that matters.

Per pass: control frames first (accept, reject, credit, heartbeat), then one batch of
records per attempt, progress, and completions whose records are all sent, so a job's
records always precede its completion. The caller commits the journal before sending a
pass that is ``durable`` (it carries an accept or a completion: both promise that something
is on disk), then packs the parts into frames.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from bridgehead.agent.runner import Attempt
from bridgehead.protocol import Accept, AgentMessage, AgentSession, Progress

# Bytes of a records frame besides the records themselves (type, ids, seq, brackets).
FRAME_OVERHEAD = 512


@dataclass
class Pass:
    parts: list[bytes] = field(default_factory=list)
    durable: bool = False  # commit the journal before sending
    busy: bool = False  # more records are ready than one pass took: run another
    completes: bool = False  # carries a completion


def take_pass(
    control: deque[AgentMessage],
    attempts: Iterable[Attempt],
    session: AgentSession,
    batch_records: int,
    batch_bytes: int,
) -> Pass:
    out = Pass()
    parts = out.parts
    while control:
        message = control.popleft()
        # Of the control frames only an accept promises something on disk (the job is in
        # the journal); credit, heartbeats, refusals and drains cost no flush.
        out.durable = out.durable or isinstance(message, Accept)
        parts.append(session.send(message))
    for attempt in attempts:
        stream = attempt.stream
        if stream.closed:
            continue
        batch = stream.take_batch(batch_records, batch_bytes)
        if batch is not None:
            first, arrays = batch
            bodies = [array.body for array in arrays]
            parts.append(session.send_records(stream.job_id, stream.attempt, first, bodies))
            out.busy = out.busy or stream.has_unsent()
        if stream.progress_dirty:
            stream.progress_dirty = False
            done, total, text = stream.last_progress
            progress = Progress(
                job_id=stream.job_id, attempt=stream.attempt, done=done, total=total, message=text[:8000]
            )
            parts.append(session.send(progress))
        if stream.completion is not None and stream.completion_ready():
            stream.completion_sent = True
            out.durable = out.completes = True
            parts.append(session.send(stream.completion))
    return out
