"""The control plane as the courier of signed releases: which agent moves next, and the bytes.

An admin sets a cluster's wanted version (API or CLI); the courier offers it to the cluster's
agents **one at a time**: an agent holds its cluster's slot from the offer until it reports
``committed`` (the new release runs and is healthy), ``refused`` or ``rolled_back``, or until
``update_timeout_s`` passes (recorded ``timed_out``). So a release that breaks agents breaks
one, never the cluster, and the rest keep running the old one while the admin looks.

An update that failed is not offered again to that agent until the admin sets the wanted
version again (a newer ``set_at``): no yo-yo. The courier never signs anything: it hands over
bytes and the signature made offline with the release key, and the agent verifies both
against the key it pinned at enrolment.

The download goes through the agent's own session, paced by the agent (``fetch_release``,
one request at a time, each at most ``chunk_bytes``), so it is bounded, resumable from what
the agent has on disk, and needs no other port, proxy rule or credential.

State lives in memory and the store: the wanted versions are re-read every ``poll_s`` (a CLI
on the data dir changes them under a running server), the outcomes are rows of the store
(``record_update``), and the failures are read back from them at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from bridgehead.control.config import ReleasesSection
from bridgehead.control.dispatch.links import AgentLink
from bridgehead.control.releases.files import ReleaseFiles
from bridgehead.control.store.base import Store, UpdateRow
from bridgehead.protocol import FetchRelease, ProtocolError, ReleaseChunk, UpdateOffer, UpdateStatus

log = logging.getLogger("bridgehead.control.releases")

FAILED_STATES = frozenset({"refused", "rolled_back", "timed_out"})
ENDED_STATES = FAILED_STATES | {"committed"}


@dataclass
class Slot:
    """The one agent of a cluster moving to ``version`` now."""

    agent: str
    version: str
    deadline: float  # monotonic
    session_id: str  # the session the offer went to: a new session (a reconnect) is offered again
    fetching: bool = False
    reported: str = "offered"


class Courier:
    def __init__(
        self, store: Store, files: ReleaseFiles, config: ReleasesSection, links: Mapping[str, AgentLink]
    ) -> None:
        self.store = store
        self.files = files
        self.config = config
        self.links = links
        self.wanted: dict[str, tuple[str, float]] = {}
        self.slots: dict[str, Slot] = {}
        self.failed: dict[tuple[str, str], float] = {}  # (agent, version) -> when it failed
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for row in reversed(await self.store.updates(limit=10_000)):
            if row.state in FAILED_STATES:
                self.failed[(row.agent, row.version)] = row.at
        self.wanted = await self.store.wanted_releases()
        self._task = asyncio.create_task(self._poll(), name="release courier")

    async def stop(self) -> None:
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- what the gateway tells it -------------------------------------------------------

    def attached(self, link: AgentLink) -> None:
        """An agent's session is open: it may be the next to move, or resume its move."""
        self._spawn(self._consider(link.cluster))

    def handle(self, link: AgentLink, message: FetchRelease | UpdateStatus) -> None:
        if isinstance(message, FetchRelease):
            self._fetch(link, message)
        else:
            self._spawn(self._status(link, message))

    # --- the work --------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("release courier: %s", task.exception(), exc_info=task.exception())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_s)
            try:
                self.wanted = await self.store.wanted_releases()
                await self._expire()
                for cluster in sorted(self.wanted):
                    await self._consider(cluster)
            except Exception:  # noqa: BLE001 - a busy database costs one poll, not the courier
                log.exception("release courier: a poll failed")

    async def _expire(self) -> None:
        now = time.monotonic()
        for cluster, slot in list(self.slots.items()):
            if now >= slot.deadline:
                why = f"no outcome within update_timeout_s ({self.config.update_timeout_s:g} s) of the offer"
                log.warning("agent %s: update to %s timed out: %s", slot.agent, slot.version, why)
                await self._end(cluster, slot, "timed_out", why)

    async def _consider(self, cluster: str) -> None:
        """Offer the cluster's wanted version to its next agent, unless one is moving."""
        want = self.wanted.get(cluster)
        if want is None:
            return
        version, set_at = want
        slot = self.slots.get(cluster)
        if slot is not None:
            link = self.links.get(slot.agent)
            if link is not None and link.session_id != slot.session_id and link.version != slot.version:
                # It came back on the old release before an outcome (a crash mid-download, a
                # restart): offer again to the same agent; its download resumes from its disk.
                await self._offer(cluster, link, slot.version, slot)
            return
        candidates = sorted(
            (
                link
                for link in self.links.values()
                if link.cluster == cluster
                and not link.closed
                and not link.draining
                and link.version != version
                and self.failed.get((link.name, version), float("-inf")) < set_at
            ),
            key=lambda link: link.name,
        )
        if candidates:
            await self._offer(cluster, candidates[0], version, None)

    async def _offer(self, cluster: str, link: AgentLink, version: str, slot: Slot | None) -> None:
        release = await self.store.release(version)
        if release is None:
            log.error("cluster %s wants release %s, which is not uploaded", cluster, version)
            return
        if self.slots.get(cluster, slot) is not slot or link.closed:
            return  # another offer went out while the store answered
        deadline = time.monotonic() + self.config.update_timeout_s
        if slot is None:
            slot = Slot(link.name, version, deadline, link.session_id)
            self.slots[cluster] = slot
            await self.store.record_update(UpdateRow(link.name, cluster, version, "offered", "", time.time()))
        else:
            slot.session_id, slot.fetching = link.session_id, False
        log.info("offering release %s to agent %s (cluster %s)", version, link.name, cluster)
        link.send(
            UpdateOffer(
                version=version,
                size=release.size,
                sha256=release.sha256,
                signature=release.signature,
                health_deadline_s=self.config.health_deadline_s,
            )
        )

    def _fetch(self, link: AgentLink, message: FetchRelease) -> None:
        slot = self.slots.get(link.cluster)
        if slot is None or slot.agent != link.name or slot.version != message.version:
            raise ProtocolError("unexpected_message", f"release {message.version} was not offered to this agent")
        if slot.fetching:
            raise ProtocolError("unexpected_message", "fetch_release while a fetch is in flight (one at a time)")
        slot.fetching = True
        self._spawn(self._send_chunk(link, slot, message))

    async def _send_chunk(self, link: AgentLink, slot: Slot, message: FetchRelease) -> None:
        try:
            length = min(message.length, self.config.chunk_bytes)
            data = await asyncio.to_thread(self.files.read, message.version, message.offset, length)
        except (OSError, ValueError) as exc:
            log.error("agent %s: release %s cannot be read: %s", link.name, message.version, exc)
            link.close(1011, "the release cannot be read")
            return
        finally:
            slot.fetching = False
        if not link.closed:
            link.send(ReleaseChunk(version=message.version, offset=message.offset, data=data))

    async def _status(self, link: AgentLink, message: UpdateStatus) -> None:
        slot = self.slots.get(link.cluster)
        ours = slot is not None and slot.agent == link.name and slot.version == message.version
        if message.state == "downloading":
            if ours and slot is not None and slot.reported == "offered":
                slot.reported = "downloading"
                await self.store.record_update(
                    UpdateRow(link.name, link.cluster, message.version, "downloading", message.message, time.time())
                )
            return
        if ours and slot is not None:
            if message.state in ENDED_STATES:
                await self._end(link.cluster, slot, message.state, message.message)
            elif slot.reported != message.state:
                slot.reported = message.state
                await self.store.record_update(
                    UpdateRow(link.name, link.cluster, message.version, message.state, message.message, time.time())
                )
            return
        # An outcome outside a slot: a rollback reported after the slot timed out, or again at
        # each connect until it is recorded. Record it once, so it is never offered again.
        if message.state in FAILED_STATES and (link.name, message.version) not in self.failed:
            self.failed[(link.name, message.version)] = time.time()
            await self.store.record_update(
                UpdateRow(link.name, link.cluster, message.version, message.state, message.message, time.time())
            )

    async def _end(self, cluster: str, slot: Slot, state: str, message: str) -> None:
        if self.slots.get(cluster) is slot:
            del self.slots[cluster]
        if state in FAILED_STATES:
            self.failed[(slot.agent, slot.version)] = time.time()
            log.warning("agent %s: update to %s %s: %s", slot.agent, slot.version, state, message)
        else:
            log.info("agent %s: update to %s committed", slot.agent, slot.version)
        await self.store.record_update(UpdateRow(slot.agent, cluster, slot.version, state, message, time.time()))
        await self._consider(cluster)  # the next agent of the cluster
