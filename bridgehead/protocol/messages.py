"""The messages of the agent channel, protocol version 1.

Every message is one websocket frame holding one JSON object whose ``type`` field names it.
Field limits are part of the types (``msgspec.Meta``), so decoding a frame also validates it:
a frame that decodes is a well-formed message with every field within its bounds.

Direction is part of the contract: ``ServerMessage`` flows from the control plane to the
agent, ``AgentMessage`` from the agent to the control plane. ``docs/protocol.md`` walks
through a session.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

PROTOCOL_VERSION = 1
SUBPROTOCOL = f"bridgehead.v{PROTOCOL_VERSION}"

# Bounds shared by both sides. The byte limit of a whole frame is negotiated separately
# (``Limits.max_message_bytes``); these keep single fields sane whatever the frame size.
JobId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Attempt = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Seq = Annotated[int, msgspec.Meta(ge=0)]
Text = Annotated[str, msgspec.Meta(max_length=8192)]
MAX_BATCH_RECORDS = 10_000
MAX_LISTED = 10_000
JobStatus = Literal["succeeded", "failed", "cancelled"]
# A release's version: it names a directory on the agent, so no separators and no dot first.
ReleaseVersion = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")]
MAX_RELEASE_BYTES = 512 * 1024 * 1024
MAX_RELEASE_CHUNK = 1024 * 1024
UpdateState = Literal["downloading", "refused", "restarting", "committed", "rolled_back"]


class ErrorInfo(msgspec.Struct, frozen=True):
    """Why an attempt failed: ``code`` is stable and machine-readable, ``message`` is for people."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    message: Text = ""
    retryable: bool = False


class JobRef(msgspec.Struct, frozen=True, array_like=True):
    """One attempt of one job, sent as ``[job_id, attempt]`` to keep heartbeats small."""

    job_id: JobId
    attempt: Attempt


class PluginInfo(msgspec.Struct, frozen=True):
    """What the agent can run: the plugin's name and version, and the JSON Schema of its params."""

    name: Name
    version: Annotated[str, msgspec.Meta(max_length=64)] = ""
    params_schema: dict[str, object] | None = None


class HeldJob(msgspec.Struct, frozen=True):
    """A job attempt the agent still holds when it says hello.

    ``state`` is ``running`` (its task is alive: a reconnect within one agent process),
    ``done`` (finished; completion and possibly records not yet acknowledged) or ``lost``
    (the agent restarted while it ran, so its unsent output is gone and it must not resume).
    ``next_seq`` is one past the last record the attempt produced. ``safe_to_repeat`` is what
    the plugin said at admission (None: not known, from an older agent or journal): the
    attempt's accept may never have reached the control plane, which would otherwise take
    it for one that never ran.
    """

    job_id: JobId
    attempt: Attempt
    state: Literal["running", "done", "lost"]
    next_seq: Seq = 1
    safe_to_repeat: bool | None = None


class ResumeJob(msgspec.Struct, frozen=True):
    """The control plane's verdict on a held job: go on from ``acked_seq``, or drop it."""

    job_id: JobId
    attempt: Attempt
    action: Literal["continue", "abandon"]
    acked_seq: Seq = 0


# --- control plane -> agent ---------------------------------------------------------------


class Challenge(msgspec.Struct, tag="challenge", frozen=True):
    """First frame of a session: a fresh nonce the agent signs with its enrolled key."""

    nonce: Annotated[str, msgspec.Meta(min_length=16, max_length=128)]
    server_version: Annotated[str, msgspec.Meta(max_length=64)] = ""


class SigningKey(msgspec.Struct, frozen=True):
    """A job-signing public key, endorsed by the key it succeeds (``bridgehead.protocol.signing``):
    an agent pins a new key only when a key it already trusts vouches for it."""

    key_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    public_key: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    endorsed_by: Annotated[str, msgspec.Meta(max_length=64)] = ""
    endorsement: Annotated[str, msgspec.Meta(max_length=256)] = ""


class Welcome(msgspec.Struct, tag="welcome", frozen=True):
    """The agent is authenticated; the session's timing and the verdicts on its held jobs.
    ``signing_keys``: the control plane's job-signing keys, so that a rotation reaches agents
    before the first offer signed with the new key."""

    session_id: Name
    heartbeat_s: Annotated[float, msgspec.Meta(gt=0, le=3600)]
    lease_s: Annotated[float, msgspec.Meta(gt=0, le=86400)]
    max_message_bytes: Annotated[int, msgspec.Meta(ge=4096)]
    resume: Annotated[list[ResumeJob], msgspec.Meta(max_length=MAX_LISTED)] = []
    signing_keys: Annotated[list[SigningKey], msgspec.Meta(max_length=16)] = []


class SyncState(msgspec.Struct, frozen=True, kw_only=True):
    """What a sync job leaves for the next run of the same sync (``params.sync``): kept by the
    control plane and handed to that next run, on whichever agent, as the offer's ``sync_state``.

    ``ids`` are the identities (``entryUUID``, ``objectGUID``: 16 bytes each) present at this
    run, sorted and concatenated; base64 on the wire. ``version`` is the state this run
    started from: the control plane keeps the new state only if none replaced it meanwhile.
    """

    name: Name
    version: Annotated[int, msgspec.Meta(ge=0)] = 0
    watermark: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    ids: bytes = b""


class Offer(msgspec.Struct, tag="offer", frozen=True):
    """A job attempt for the agent to run, sent only while the agent has credit.

    Signed by the control plane (Ed25519, ``bridgehead.protocol.signing``) over every field but
    the signature: the agent runs it only if the signature verifies with a key it pinned, the
    offer names this agent, it has not expired, and its job id and attempt are new to it.
    ``sync_state``: for a job whose params name a sync (``params.sync``), the state its run
    starts from (an agent older than this field ignores it and refuses such an offer, whose
    signature then does not verify for it).

    ``confirm_follows``: the attempt was committed but not yet flushed to stable storage on
    the control plane when the offer left (sent at commit, so that the control plane's flush
    and the agent's run in parallel). A power loss there could forget the attempt and offer
    the job again, so a run *not* safe to repeat waits for ``Confirm`` (or for a welcome that
    continues the attempt) before it starts; a run safe to repeat starts at once. Offered
    only to agents whose hello lists the ``confirm`` feature.
    """

    job_id: JobId
    attempt: Attempt
    plugin: Name
    params: dict[str, object]
    timeout_s: Annotated[float, msgspec.Meta(gt=0)]
    agent: Annotated[str, msgspec.Meta(max_length=128)] = ""
    issued_at: Annotated[int, msgspec.Meta(ge=0)] = 0  # unix seconds
    expires_at: Annotated[int, msgspec.Meta(ge=0)] = 0  # unix seconds
    key_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    signature: Annotated[str, msgspec.Meta(max_length=256)] = ""
    sync_state: SyncState | None = None
    confirm_follows: bool = False


class Confirm(msgspec.Struct, tag="confirm", frozen=True):
    """The attempt of an offer sent with ``confirm_follows`` is now durable on the control
    plane: a run not safe to repeat may start. Sent only for attempts accepted as not safe to
    repeat, once both the acceptance has arrived and the attempt is durable."""

    job_id: JobId
    attempt: Attempt


class Ack(msgspec.Struct, tag="ack", frozen=True):
    """Every record of the attempt up to and including ``seq`` is durable on the control plane."""

    job_id: JobId
    attempt: Attempt
    seq: Seq


class CompleteAck(msgspec.Struct, tag="complete_ack", frozen=True):
    """The attempt's completion is durable; the agent may forget the attempt."""

    job_id: JobId
    attempt: Attempt


class Cancel(msgspec.Struct, tag="cancel", frozen=True):
    """Stop the attempt and report it ``cancelled`` (its records so far stay valid)."""

    job_id: JobId
    attempt: Attempt
    reason: Text = ""


class Abandon(msgspec.Struct, tag="abandon", frozen=True):
    """The attempt is no longer current (fenced): stop it and discard its output unsent."""

    job_id: JobId
    attempt: Attempt
    reason: Text = ""


class Heartbeat(msgspec.Struct, tag="heartbeat", frozen=True):
    """Liveness in both directions. Any frame from the agent renews the leases of all its
    attempts; ``running`` lists them for diagnostics and reconciliation."""

    running: Annotated[list[JobRef], msgspec.Meta(max_length=MAX_LISTED)] = []


class Certificate(msgspec.Struct, tag="certificate", frozen=True):
    """A renewed client certificate (PEM) for the agent's existing key, answering ``renew``."""

    certificate: Annotated[str, msgspec.Meta(min_length=1, max_length=16384)]


class UpdateOffer(msgspec.Struct, tag="update", frozen=True):
    """Move to release ``version`` of the agent (its cluster's wanted version).

    The agent fetches it through this channel (``fetch_release``), checks ``sha256`` and
    ``signature`` (Ed25519 by the release key the agent pinned at enrolment, over the version
    and the hash: ``bridgehead.protocol.release_signing``), drains its jobs, swaps and restarts,
    and rolls back by itself unless the new release connects and is healthy within
    ``health_deadline_s``. The control plane is only the courier: it cannot sign a release.
    """

    version: ReleaseVersion
    size: Annotated[int, msgspec.Meta(ge=1, le=MAX_RELEASE_BYTES)]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    signature: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    health_deadline_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 120.0


class ReleaseChunk(msgspec.Struct, tag="release_chunk", frozen=True):
    """Bytes ``offset`` to ``offset + len(data)`` of release ``version`` (base64 in JSON),
    answering ``fetch_release``."""

    version: ReleaseVersion
    offset: Annotated[int, msgspec.Meta(ge=0, le=MAX_RELEASE_BYTES)]
    data: bytes


class Error(msgspec.Struct, tag="error", frozen=True):
    """The sender is about to close the connection, and says why."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    message: Text = ""


# --- agent -> control plane ---------------------------------------------------------------


class Hello(msgspec.Struct, tag="hello", frozen=True):
    """The agent's answer to the challenge: who it is, proof of its key, what it can run.

    ``signature`` covers the nonce, the agent's name and cluster and the SHA-256 of the server
    certificate the agent saw (``bridgehead.protocol.signing.hello_bytes``): a relay that forwards
    the challenge holds another certificate, so the signature it passes on does not verify.
    ``features``: what this agent understands beyond the base protocol, so that a newer control
    plane talks to an older agent in the old way (``confirm``: offers with ``confirm_follows``).
    """

    agent: Name
    cluster: Name
    signature: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    version: Annotated[str, msgspec.Meta(max_length=64)] = ""
    capacity: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    plugins: Annotated[list[PluginInfo], msgspec.Meta(max_length=1000)] = []
    connections: Annotated[list[Name], msgspec.Meta(max_length=10_000)] = []
    jobs: Annotated[list[HeldJob], msgspec.Meta(max_length=MAX_LISTED)] = []
    features: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=64)] = []


# The feature an agent lists in its hello when it holds a run not safe to repeat for ``Confirm``.
FEATURE_CONFIRM = "confirm"


class Renew(msgspec.Struct, tag="renew", frozen=True):
    """The agent's certificate nears its end: a CSR (PEM) for the same key, answered by
    ``certificate``. Over the authenticated session, so no token is needed."""

    csr: Annotated[str, msgspec.Meta(min_length=1, max_length=16384)]


class Credit(msgspec.Struct, tag="credit", frozen=True):
    """The agent can take ``n`` more jobs (increments; the control plane never over-offers)."""

    n: Annotated[int, msgspec.Meta(ge=1, le=100_000)]


class Drain(msgspec.Struct, tag="drain", frozen=True):
    """The agent is shutting down: offer it nothing more; its running jobs finish."""

    reason: Text = ""


class Accept(msgspec.Struct, tag="accept", frozen=True):
    """The offer is journaled on the agent and runs; ``safe_to_repeat`` is the plugin's word
    on whether a lost attempt may be run again elsewhere."""

    job_id: JobId
    attempt: Attempt
    safe_to_repeat: bool = False


class Reject(msgspec.Struct, tag="reject", frozen=True):
    """The offer cannot run here (bad params, unknown plugin or profile, policy, draining)."""

    job_id: JobId
    attempt: Attempt
    error: ErrorInfo


class Records(msgspec.Struct, tag="records", frozen=True):
    """Records ``seq``, ``seq + 1``, ... of an attempt; each is one JSON object, kept raw."""

    job_id: JobId
    attempt: Attempt
    seq: Annotated[int, msgspec.Meta(ge=1)]
    records: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_BATCH_RECORDS)]


class Progress(msgspec.Struct, tag="progress", frozen=True):
    """Advisory progress of a long attempt (not durable, may be dropped)."""

    job_id: JobId
    attempt: Attempt
    done: Annotated[int, msgspec.Meta(ge=0)] | None = None
    total: Annotated[int, msgspec.Meta(ge=0)] | None = None
    message: Text = ""


class Complete(msgspec.Struct, tag="complete", frozen=True):
    """The attempt ended. ``record_count`` is its last seq; every record must precede this
    frame on the same connection. ``sync_state``: a succeeded sync job's state for its next run."""

    job_id: JobId
    attempt: Attempt
    status: JobStatus
    record_count: Seq = 0
    error: ErrorInfo | None = None
    sync_state: SyncState | None = None


class FetchRelease(msgspec.Struct, tag="fetch_release", frozen=True):
    """Send ``length`` bytes of release ``version`` from ``offset`` (one request at a time:
    the download is paced by the agent, resumable from what it has on disk)."""

    version: ReleaseVersion
    offset: Annotated[int, msgspec.Meta(ge=0, le=MAX_RELEASE_BYTES)]
    length: Annotated[int, msgspec.Meta(ge=1, le=MAX_RELEASE_CHUNK)]


class UpdateStatus(msgspec.Struct, tag="update_status", frozen=True):
    """Where the agent's move to ``version`` stands: ``downloading``, ``refused`` (not taken:
    bad signature or hash, no pinned key, a pin, a failed try before; ``message`` says which),
    ``restarting`` (verified and drained: it swaps and restarts now), ``committed`` (the new
    release runs and is healthy) or ``rolled_back`` (it was not: the previous release runs)."""

    version: ReleaseVersion
    state: UpdateState
    message: Text = ""
    done_bytes: Annotated[int, msgspec.Meta(ge=0, le=MAX_RELEASE_BYTES)] = 0


ServerMessage = (
    Challenge
    | Welcome
    | Offer
    | Confirm
    | Ack
    | CompleteAck
    | Cancel
    | Abandon
    | Heartbeat
    | Certificate
    | UpdateOffer
    | ReleaseChunk
    | Error
)
AgentMessage = (
    Hello
    | Credit
    | Drain
    | Accept
    | Reject
    | Records
    | Progress
    | Complete
    | Heartbeat
    | Renew
    | FetchRelease
    | UpdateStatus
    | Error
)
