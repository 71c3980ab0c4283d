"""One pass of the agent's writer: what is ready to send, encoded, in the order that matters.

Per pass: control frames first (accept, reject, credit, heartbeat), then one batch of
records per attempt, progress, and completions whose records are all sent, so a job's
records always precede its completion. Each part goes in one of two lanes:

- ``gated`` leaves after every gated lane before it, and once the journal's flush that
  covers this pass is done if the pass carries an accept (persist, then acknowledge):
  accepts, and everything of a run that is not safe to repeat, so its records and
  completion never overtake its accept (the control plane takes an attempt it has no
  accept for as one that never ran, and may offer it again).
- ``now`` leaves at once: other control frames, and the output of a run safe to repeat.

A completion is not an acknowledgement: it asks for one (``complete_ack``, sent once the
control plane's store has it durably). Sent before the agent's own flush, it is never worse
off than sent after it: until one side has flushed it a power loss loses it either way, and
the control plane's flush starts as soon as the frame arrives. So no completion waits for
the agent's disk. That of a run not safe to repeat asks for a flush as it leaves (``sync``),
so that the agent too holds it durably soon (a power loss then cannot turn a finished run
into a lost one); that of a run safe to repeat does not even ask (lost, the job runs again,
harmlessly), and the control plane's flush is the only one on its path. The journal is
committed first (``commit``), so a crash of the agent process never forgets a completion it
sent.
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
class Lane:
    parts: list[bytes] = field(default_factory=list)
    completes: bool = False  # carries a completion


@dataclass
class Pass:
    now: Lane = field(default_factory=Lane)
    gated: Lane = field(default_factory=Lane)
    flush: bool = False  # an accept: flush, then send ``gated``
    # The completion of a run not safe to repeat: ask for a flush, but wait for none (below).
    sync: bool = False
    busy: bool = False  # more records are ready than one pass took: run another

    @property
    def commit(self) -> bool:
        """It carries an accept or a completion: commit the journal before sending anything."""
        return self.flush or self.now.completes or self.gated.completes


def take_pass(
    control: deque[AgentMessage],
    attempts: Iterable[Attempt],
    session: AgentSession,
    batch_records: int,
    batch_bytes: int,
) -> Pass:
    out = Pass()
    ended: set[tuple[str, int]] = set()  # runs safe to repeat whose completion is in this pass
    for attempt in attempts:
        stream = attempt.stream
        if stream.closed:
            continue
        lane = out.now if attempt.safe_to_repeat else out.gated
        batch = stream.take_batch(batch_records, batch_bytes)
        if batch is not None:
            first, arrays = batch
            bodies = [array.body for array in arrays]
            lane.parts.append(session.send_records(stream.job_id, stream.attempt, first, bodies))
            out.busy = out.busy or stream.has_unsent()
        if stream.progress_dirty:
            stream.progress_dirty = False
            done, total, text = stream.last_progress
            progress = Progress(
                job_id=stream.job_id, attempt=stream.attempt, done=done, total=total, message=text[:8000]
            )
            lane.parts.append(session.send(progress))
        if stream.completion is not None and stream.completion_ready():
            stream.completion_sent = True
            lane.completes = True
            if attempt.safe_to_repeat:
                ended.add(attempt.key)
            else:
                out.sync = True
            lane.parts.append(session.send(stream.completion))
    # Control frames go first in their lane. Of them only an accept promises something on
    # disk (the job is in the journal); credit, heartbeats, refusals and drains cost no flush.
    # A run safe to repeat that ends in this very pass is not accepted at all: its
    # completion tells the control plane all an accept would, and then nothing of it waits
    # for the agent's disk.
    now: list[bytes] = []
    gated: list[bytes] = []
    while control:
        message = control.popleft()
        if not isinstance(message, Accept):
            now.append(session.send(message))
        elif (message.job_id, message.attempt) not in ended:
            out.flush = True
            gated.append(session.send(message))
    out.now.parts[:0] = now
    out.gated.parts[:0] = gated
    return out
