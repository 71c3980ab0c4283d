"""The agent's side of a self-update, driven by the session: take an offer, fetch the release
through the channel, verify it, drain, then restart into it on probation; and, as the new
release, report healthy (commit) or give up at the deadline (roll back).

    update offer ──▶ refusal checks ──▶ fetch_release … release_chunk (resumable, bounded)
        ──▶ size, SHA-256 and Ed25519 signature by the pinned release key (``Download.finish``)
        ──▶ ``restarting``; ``stop()``: the same drain as SIGTERM (running jobs finish, their
            records are acknowledged, the control plane offers this agent nothing more)
        ──▶ ``cli.cmd_run`` calls :meth:`Updater.restart`: trial recorded, ``current`` swapped,
            exec of the base, whose launcher counts the trial's start and execs the release
            (same PID throughout, so a service manager keeps supervising it)
    the new release, once its session is open ──▶ commit ──▶ ``committed``
    no healthy session by the deadline ──▶ rollback ──▶ exec of the base ──▶ ``rolled_back``

The staging, swap and rollback themselves are ``bridgehead.agent.update``'s, crash-safe at every
step. What an offer must pass here: self-update on in agent.toml, a release key pinned at
enrolment, the agent's own pin, no downgrade unless allowed, not a version that failed here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from bridgehead import __version__
from bridgehead.agent.config import AgentConfig
from bridgehead.agent.identity import Identity
from bridgehead.agent.update.errors import UpdateError
from bridgehead.agent.update.launcher import relaunch_base
from bridgehead.agent.update.layout import releases_dir
from bridgehead.agent.update.releases import Releases
from bridgehead.agent.update.staging import Download
from bridgehead.agent.update.trial import TrialGuard
from bridgehead.protocol import AgentMessage, FetchRelease, ReleaseChunk, UpdateOffer, UpdateStatus
from bridgehead.protocol.messages import MAX_RELEASE_CHUNK

log = logging.getLogger("bridgehead.agent.update")

PROGRESS_STEPS = 10  # a downloading status at every tenth of the release


def version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Versions compare part by part, numbers as numbers (``0.10.0`` after ``0.9.1``)."""
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+_-]", version))


class Updater:
    def __init__(
        self,
        config: AgentConfig,
        identity: Identity,
        send: Callable[[AgentMessage], None],
        stop: Callable[[], None],
        running_version: str = __version__,
    ) -> None:
        self.config = config
        self.identity = identity
        self.send = send
        self.stop = stop
        self.running_version = running_version
        self.data_dir = Path(config.agent.data_dir)
        self.releases = Releases(self.data_dir)
        self.offer: UpdateOffer | None = None
        self.download: Download | None = None
        self.ready: UpdateOffer | None = None  # verified: restart into it once drained
        self.rolling_back = ""  # the trial gave up: exec the base once stopped
        self._reported = 0  # the last tenth of progress reported
        self._finishing = False
        self.guard = TrialGuard(self.releases, running_version)

    # --- the trial ---------------------------------------------------------------------------

    async def watch_trial(self) -> None:
        """As a release on probation: give up at its deadline unless a session opened first.
        The health check is the session itself: it proves this release runs, reads its config
        and identity, loads its plugins, reaches the control plane through the network and proxy
        as configured, and speaks its protocol. A release that hangs before its deadline is
        killed by the service manager's watchdog; the launcher then rolls it back."""
        try:
            left = self.guard.seconds_left()
        except UpdateError as exc:
            log.warning("update state unreadable (%s); no trial to judge", exc)
            return
        if left is None:
            return
        log.info("release %s on trial: %.0f s to a healthy session", self.running_version, left)
        while left is not None:
            # The sleep runs on the monotonic clock, the deadline is wall-clock: it can wake a
            # hair early, so look again until the deadline has really passed (or it committed).
            await asyncio.sleep(max(0.0, left) + 0.05)
            if self.guard.deadline_passed():
                log.error(
                    "release %s: no healthy session before its trial's deadline; rolled back", self.running_version
                )
                self.rolling_back = "deadline"
                self.stop()
                return
            left = self.guard.seconds_left()

    def on_connected(self) -> None:
        """The session is open (welcome received): the trial is healthy; report past outcomes;
        go on with a download a lost connection interrupted."""
        try:
            if self.guard.healthy():
                self.send(UpdateStatus(version=self.running_version, state="committed"))
        except UpdateError as exc:
            log.error("release %s could not be committed: %s", self.running_version, exc)
        try:
            failed = self.releases.state().failed
        except UpdateError:
            failed = {}
        for version, reason in failed.items():  # the courier records each once
            self.send(UpdateStatus(version=version, state="rolled_back", message=reason[:8000]))
        if self.download is not None and self.offer is not None and self.ready is None and not self._finishing:
            self._request(self.offer, self.download)

    # --- an offer and its bytes --------------------------------------------------------------

    def on_offer(self, offer: UpdateOffer) -> None:
        refusal = self._refusal(offer)
        if refusal:
            log.warning("update to %s refused: %s", offer.version, refusal)
            self.send(UpdateStatus(version=offer.version, state="refused", message=refusal))
            return
        if self.ready is not None or self._finishing:
            return  # verified already: restarting
        if self.offer is not None and self.offer.version == offer.version and self.download is not None:
            self._request(offer, self.download)  # offered again on a new session: go on from the disk
            return
        if self.download is not None:
            self.download.discard()
        try:
            limit = self.config.update.max_release_bytes
            self.download = Download(releases_dir(self.data_dir), offer.version, offer.size, offer.sha256, limit)
        except UpdateError as exc:
            self._refuse(offer, str(exc))
            return
        self.offer = offer
        self._reported = self.download.offset * PROGRESS_STEPS // offer.size
        log.info("update to %s: downloading %d bytes (from byte %d)", offer.version, offer.size, self.download.offset)
        self.send(UpdateStatus(version=offer.version, state="downloading", done_bytes=self.download.offset))
        self._next(offer, self.download)

    def on_chunk(self, chunk: ReleaseChunk) -> None:
        offer, download = self.offer, self.download
        if offer is None or download is None or chunk.version != offer.version or self._finishing:
            log.warning("release chunk of %s at %d not asked for; ignored", chunk.version, chunk.offset)
            return
        try:
            download.write(chunk.offset, chunk.data)
        except UpdateError as exc:
            self._refuse(offer, str(exc))
            return
        tenth = download.offset * PROGRESS_STEPS // offer.size
        if tenth > self._reported:
            self._reported = tenth
            self.send(UpdateStatus(version=offer.version, state="downloading", done_bytes=download.offset))
        self._next(offer, download)

    def _next(self, offer: UpdateOffer, download: Download) -> None:
        if download.offset >= offer.size:
            self._finishing = True
            asyncio.get_running_loop().create_task(self._finish(offer, download), name="release check")
        else:
            self._request(offer, download)

    def _request(self, offer: UpdateOffer, download: Download) -> None:
        length = min(offer.size - download.offset, MAX_RELEASE_CHUNK)
        self.send(FetchRelease(version=offer.version, offset=download.offset, length=length))

    async def _finish(self, offer: UpdateOffer, download: Download) -> None:
        try:
            signature = base64.b64decode(offer.signature, validate=True)
        except (binascii.Error, ValueError):
            self._refuse(offer, "the release signature is not base64")
            return
        try:
            # Hashing a few tens of MB and an fsync: off the loop, which keeps heartbeats going.
            path = await asyncio.to_thread(download.finish, signature, self.identity.release_key)
        except UpdateError as exc:
            self._refuse(offer, str(exc))
            return
        finally:
            self._finishing = False
        log.info("update to %s: %s verified; draining, then restarting into it", offer.version, path)
        self.ready = offer
        self.send(UpdateStatus(version=offer.version, state="restarting"))
        self.stop()

    def _refuse(self, offer: UpdateOffer, why: str) -> None:
        log.error("update to %s refused: %s", offer.version, why)
        if self.download is not None:
            self.download.discard()
        self.offer = self.download = None
        self.send(UpdateStatus(version=offer.version, state="refused", message=why[:8000]))

    def _refusal(self, offer: UpdateOffer) -> str:
        update = self.config.update
        if sys.platform == "win32":
            # No execve and no symlinks without a privilege there (docs/packaging.md).
            return "self-update is not supported on Windows yet: install the new version's package"
        if not update.enabled:
            return "self-update is off in agent.toml ([update] enabled = false)"
        if not self.identity.release_key:
            return (
                "no release key was pinned at enrolment (the control plane had no [releases] public_key then); "
                "enrol the agent again to take updates"
            )
        if update.pin and offer.version != update.pin:
            return f"this agent is pinned to release {update.pin} ([update] pin in agent.toml)"
        if offer.version == self.running_version:
            return f"release {offer.version} is the one running"
        if not update.allow_downgrade and version_key(offer.version) < version_key(self.running_version):
            return (
                f"release {offer.version} is older than the running {self.running_version} "
                "([update] allow_downgrade = true to allow it)"
            )
        try:
            failed = self.releases.is_failed(offer.version)
        except UpdateError as exc:
            return f"the update state cannot be read: {exc}"
        if failed:
            return f"release {offer.version} failed on this agent before ({failed}); publish a new version"
        return ""

    # --- after the drain -------------------------------------------------------------------------

    def restart(self, config_path: str) -> NoReturn:
        """After ``run()`` drained: put the verified release on probation (or, after a failed
        trial, nothing more) and start the base again, whose launcher counts the trial's start
        and execs the release ``current`` names. Same PID: a service manager keeps watching."""
        if not self.rolling_back and self.ready is not None:
            try:
                self.releases.begin_trial(self.ready.version, self.ready.health_deadline_s)
            except UpdateError as exc:
                # Not retried in a loop: the next offer of this version is refused at once.
                log.error("release %s cannot begin its trial: %s", self.ready.version, exc)
                self.releases.mark_failed(self.ready.version, f"its trial could not begin: {exc}")
        # A stand-in release of the tests claims its version through the environment; the base
        # must not inherit the claim (production never sets it: bridgehead/__init__.py).
        os.environ.pop("BRIDGEHEAD_VERSION_OVERRIDE", None)
        relaunch_base(["run", "--config", config_path])
        raise OSError("exec of the base returned")  # execve returns only by raising
