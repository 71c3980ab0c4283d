"""What a plugin is made of: ``Plugin``, its ``Params`` and ``Profile``, the ``Credential`` it
is given and the ``JobContext`` it runs in. Re-exported by ``bridgehead.sdk``; import from there.
(A module of its own so that ``fetcher`` can name ``JobContext`` without importing the package
that re-exports it: no import cycle, tests/unit/test_import_cycles.py.)"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from itertools import repeat
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import msgspec

from bridgehead.core.errors import (
    JobError,
    RecordTooLarge,
    UnknownConnection,
)
from bridgehead.protocol.messages import SyncState
from bridgehead.sdk.nesting import MAX_RECORD_DEPTH, opening_brackets, too_deep
from bridgehead.sdk.records import RecordArray
from bridgehead.sdk.redaction import redact

Record = Mapping[str, Any]
T = TypeVar("T")


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of a plugin's job params. Unknown keys are refused, so typos fail loudly."""


class Profile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of a plugin's connection-profile keys (a ``[connections.NAME]`` table).

    ``plugin`` names the plugin the profile belongs to; ``credential`` names a
    ``[credentials.NAME]`` table whose secrets the agent resolves for each job.
    """

    plugin: str
    credential: str | None = None


class NoProfile(Profile):
    """For plugins that reach nothing outside the agent."""


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    """A resolved credential: secret values read from the environment or files at job start.

    Every secret value in here is registered with the agent's redactor, so it is replaced by
    ``***`` in every log line and error message that leaves the agent.
    """

    username: str | None = None
    password: str | None = None
    token: str | None = None
    private_key_file: str | None = None
    passphrase: str | None = None

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Credential(username={self.username!r}, ...)"


ParamsT = TypeVar("ParamsT", bound=Params)
ProfileT = TypeVar("ProfileT", bound=Profile)


class RecordSink(Protocol):
    """Where a job's encoded records go; the agent's outbound stream implements it."""

    async def put(self, data: bytes) -> None: ...

    async def put_many(self, items: Sequence[bytes]) -> None: ...

    async def put_array(self, records: RecordArray) -> None: ...

    def progress(self, done: int | None, total: int | None, message: str) -> None: ...


_encoder = msgspec.json.Encoder()
_OPEN_BRACE = b"{"


def _is_object(data: object) -> bool:
    return isinstance(data, bytes) and data.startswith(_OPEN_BRACE)


def _all_objects(encoded: Sequence[bytes]) -> bool:
    """One C-level pass (no Python frame per record): every item is bytes starting with "{"."""
    try:
        return all(map(bytes.startswith, encoded, repeat(_OPEN_BRACE)))
    except TypeError:  # an item that is not bytes
        return False


class JobContext(Generic[ProfileT]):
    """What a running job sees: its identity, profile, credential, deadline and emitter."""

    def __init__(
        self,
        *,
        job_id: str,
        attempt: int,
        profile: ProfileT,
        credential: Credential | None,
        sink: RecordSink,
        deadline: float,
        max_record_bytes: int,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        connections: Callable[[str], tuple[Profile, Credential | None]] | None = None,
        previous_sync_state: SyncState | None = None,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.profile = profile
        self.credential = credential
        self.deadline = deadline
        self.log = logger
        self.records_emitted = 0
        self._connections = connections
        # Set by a sync job (keep_sync_state): what its next run starts from.
        self.sync_state: SyncState | None = None
        self._previous_sync_state = previous_sync_state
        self._sink = sink
        self._max_record_bytes = max_record_bytes

    @property
    def remaining_s(self) -> float:
        """Seconds left before the job's timeout; pass it on to the source's own timeouts."""
        return max(0.0, self.deadline - time.monotonic())

    async def emit(self, record: Record) -> None:
        """Send one record (a JSON object). Blocks while the agent's window and spool are full."""
        data = _encode_record(record)
        if len(data) > self._max_record_bytes:
            raise RecordTooLarge(
                f"record {self.records_emitted + 1} is {len(data)} bytes, over the agent's "
                f"limits.max_record_bytes of {self._max_record_bytes}"
            )
        if opening_brackets(data) > MAX_RECORD_DEPTH:
            self._check_depths([data])
        await self._sink.put(data)
        self.records_emitted += 1

    async def emit_many(self, records: Iterable[Record]) -> None:
        """Send several records; cheaper than one ``emit`` each, with the same backpressure."""
        encoded = [_encode_record(record) for record in records]
        await self.emit_encoded(encoded)

    async def emit_encoded(self, encoded: Sequence[bytes]) -> None:
        """Send records already encoded as JSON objects (one UTF-8 ``bytes`` each).

        For sources that encode rows in bulk off the event loop (``sql`` does it in its fetch
        thread). The caller guarantees each item is one JSON object; size and shape are still
        checked, as ``emit`` does, so a broken encoder fails its job rather than the stream.
        """
        # C-level passes first; the per-record loop only runs to name the culprit.
        if not _all_objects(encoded) or max(map(len, encoded), default=0) > self._max_record_bytes:
            self._check_sizes(encoded)
        # Each record holds at least one "{": the deepest can hold the batch's total less one
        # for each of the others (C-level counts; per record only past the bound).
        brackets = sum(map(bytes.count, encoded, repeat(b"{"))) + sum(map(bytes.count, encoded, repeat(b"[")))
        if brackets - (len(encoded) - 1) > MAX_RECORD_DEPTH:
            self._check_depths(encoded)
        await self._sink.put_many(encoded)
        self.records_emitted += len(encoded)

    async def emit_array(self, records: RecordArray) -> None:
        """Send records encoded together as one JSON array (``RecordArray.of_structs``, in the
        plugin's encoding thread): the cheapest way for a source of many small records.

        The array's shape is guaranteed by how it was made; its size is checked as ``emit``
        does: one C-level length when the whole array is within the limit, else per record.
        """
        if len(records.body) > self._max_record_bytes:
            self._check_sizes(records.records())
        # As in emit_encoded; the array's own "[" is not a record's.
        if opening_brackets(records.body) - 1 - (records.count - 1) > MAX_RECORD_DEPTH:
            self._check_depths(records.records())
        await self._sink.put_array(records)
        self.records_emitted += records.count

    def _check_sizes(self, encoded: Sequence[bytes]) -> None:
        """Raise for the first record that is not an encoded object or is over the limit."""
        limit = self._max_record_bytes
        for n, data in enumerate(encoded, self.records_emitted + 1):
            if not _is_object(data):
                raise JobError(f"record {n} is not an encoded JSON object", code="bad_record")
            if len(data) > limit:
                raise RecordTooLarge(
                    f"record {n} is {len(data)} bytes, over the agent's limits.max_record_bytes of {limit}"
                )

    def _check_depths(self, encoded: Sequence[bytes]) -> None:
        """Raise for the first record nested deeper than any decoder downstream may reach."""
        index = too_deep(encoded)
        if index is not None:
            raise JobError(
                f"record {self.records_emitted + index + 1} is nested more than {MAX_RECORD_DEPTH} levels deep",
                code="bad_record",
            )

    def other_connection(self, name: str) -> tuple[Profile, Credential | None]:
        """Another connection profile of this job's plugin, with its credential: for a profile
        that builds on another (an ssh ``jump`` host). ``UnknownConnection`` if the agent has
        no such profile, or it belongs to another plugin."""
        if self._connections is None:
            raise UnknownConnection(f"no connection profile {name!r} here (this context has none)")
        return self._connections(name)

    @property
    def max_record_bytes(self) -> int:
        """The agent's limits.max_record_bytes: the largest record, and sync state, it sends."""
        return self._max_record_bytes

    @property
    def previous_sync_state(self) -> SyncState | None:
        """For a sync job: the state its run starts from, as the control plane kept it from
        the sync's previous run (the offer's ``sync_state``); None for any other job."""
        return self._previous_sync_state

    def keep_sync_state(self, state: SyncState) -> None:
        """For a sync job: the state its next run starts from. Sent with the job's completion
        and kept by the control plane if the job succeeds (see ``bridgehead.protocol.SyncState``)."""
        self.sync_state = state

    def progress(self, done: int | None = None, total: int | None = None, message: str = "") -> None:
        """Advisory progress shown in the job API; cheap, may be coalesced or dropped. Secrets
        in ``message`` are masked, as in records and errors."""
        self._sink.progress(done, total, redact(message) if message else message)

    async def run_blocking(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_cancel: Callable[[], object] | None = None,
        cancel_grace_s: float = 10.0,
        executor: Executor | None = None,
    ) -> T:
        """Run a blocking library call in a worker thread.

        If the job is cancelled or times out meanwhile, ``on_cancel`` is called (from the
        event loop) so the source stops its work, then the thread is given ``cancel_grace_s``
        to return before the cancellation propagates. ``executor`` is the loop's default
        pool unless given: a plugin whose calls may block for long (a slow query) brings its
        own, so that it cannot starve the other plugins of threads.
        """
        future = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if on_cancel is not None:
                with contextlib.suppress(Exception):
                    on_cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(future), cancel_grace_s)
            raise


def _encode_record(record: Record) -> bytes:
    if not isinstance(record, Mapping):
        raise JobError(f"a record must be a JSON object, not {type(record).__name__}", code="bad_record")
    try:
        return _encoder.encode(record)
    except (TypeError, msgspec.EncodeError) as exc:
        raise JobError(f"record is not JSON-serialisable: {exc}", code="bad_record") from None


class Plugin(abc.ABC, Generic[ParamsT, ProfileT]):
    """Base of every plugin, built-in or an admin's own.

    Class attributes: ``name`` (what jobs ask for), ``version``, ``params_type`` and
    ``profile_type`` (msgspec structs), ``safe_to_repeat`` (may a lost attempt run again elsewhere;
    refine per job by overriding ``is_safe_to_repeat``, or ``is_safe_to_repeat_on`` to see the
    profile too). One instance serves every job of the agent, so pools and caches live on it;
    ``aclose`` releases them at shutdown.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "0"
    params_type: ClassVar[type[Params]]
    profile_type: ClassVar[type[Profile]] = NoProfile
    safe_to_repeat: ClassVar[bool] = False

    def is_safe_to_repeat(self, params: ParamsT) -> bool:
        return self.safe_to_repeat

    def is_safe_to_repeat_on(self, profile: ProfileT, params: ParamsT) -> bool:
        """Like ``is_safe_to_repeat``, for plugins whose answer depends on the profile too (a
        query on a read-only ``sql`` session may run twice; on a read-write one it may not)."""
        return self.is_safe_to_repeat(params)

    def check_policy(self, profile: ProfileT, params: ParamsT) -> None:
        """Raise ``PolicyDenied`` if ``profile`` forbids what ``params`` ask. Runs before
        the job is accepted, so a refused job touches nothing."""

    @abc.abstractmethod
    async def run(self, ctx: JobContext[ProfileT], params: ParamsT) -> None:
        """Do the job, emitting records through ``ctx``; raise a ``JobError`` to fail it."""

    async def aclose(self) -> None:
        """Release pooled connections; called once when the agent stops."""
