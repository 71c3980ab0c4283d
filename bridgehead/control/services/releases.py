"""Agent releases: upload (checked against the release key before anything is kept), list, and
the version each cluster should run, with where its agents stand.

The control plane cannot make a release: it holds only the public half of the release key
(``[releases] public_key``), checks the signature made offline with the private half exactly as
agents will, and carries binary and signature to them (``bridgehead.control.releases``). Without
a key self-update is off and uploads are refused.

Used by the HTTP layer and by the CLI (``bridgehead-control release ...`` on the data dir, with
no dispatcher: agents are then shown as the store last saw them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec

from bridgehead.control.config import ControlConfig
from bridgehead.control.releases.files import InvalidVersion, Received, ReleaseFiles, ReleaseTooLarge, check_version
from bridgehead.control.releases.signature import BadSignature, decode_signature, verify
from bridgehead.control.services.errors import Conflict, Invalid, LimitExceeded, NotFound
from bridgehead.control.services.ports import JobDispatcher
from bridgehead.control.services.requests import Name
from bridgehead.control.store.base import Actor, ReleaseConflict, ReleaseRow, Store, UpdateRow
from bridgehead.protocol.messages import ReleaseVersion

AGENT_PAGE = 1000  # agents read per store call when listing a cluster's


class WantedRelease(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PUT /api/v1/clusters/{cluster}/release``: the version the cluster's agents should run;
    null: none (agents stay on what they run)."""

    version: ReleaseVersion | None


class Release(msgspec.Struct, kw_only=True):
    version: str
    size: int
    sha256: str  # lowercase hex
    signature: str  # base64: the release key's, over the version and sha256
    uploaded_at: float
    uploaded_by: str  # an API token's id, or "cli"


class ReleaseList(msgspec.Struct, kw_only=True):
    releases: list[Release]  # newest first


class UpdateReport(msgspec.Struct, kw_only=True):
    version: str
    state: str  # offered, downloading, refused, restarting, committed, rolled_back, timed_out
    message: str
    at: float


class ClusterAgent(msgspec.Struct, kw_only=True):
    name: str
    connected: bool
    version: str  # the release it runs (as its session said, or last said)
    last_update: UpdateReport | None


class ClusterRelease(msgspec.Struct, kw_only=True):
    cluster: str
    version: str | None  # the wanted version; null: none
    set_at: float | None
    agents: list[ClusterAgent]


def release_view(row: ReleaseRow) -> Release:
    return Release(
        version=row.version,
        size=row.size,
        sha256=row.sha256,
        signature=row.signature,
        uploaded_at=row.uploaded_at,
        uploaded_by=row.uploaded_by,
    )


def update_view(row: UpdateRow) -> UpdateReport:
    return UpdateReport(version=row.version, state=row.state, message=row.message, at=row.at)


def _check_cluster(cluster: str) -> str:
    try:
        msgspec.convert(cluster, Name)
    except msgspec.ValidationError:
        raise Invalid(
            f"cluster {cluster[:200]!r} is not a cluster name (letters, digits, '_', '.', '-')",
            code="invalid_cluster",
        ) from None
    return cluster


def _version(version: str) -> str:
    try:
        return check_version(version)
    except InvalidVersion as exc:
        raise Invalid(exc.message, code=exc.code) from None


class ReleaseService:
    def __init__(
        self, config: ControlConfig, store: Store, files: ReleaseFiles, dispatcher: JobDispatcher | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.files = files
        self.dispatcher = dispatcher  # None in the CLI: no live sessions to show
        # One upload at a time from checking a version to writing its file (the store settles
        # races with other processes: see ``_keep``).
        self._commit = asyncio.Lock()

    def _key(self) -> bytes:
        key = self.config.releases.key
        if not key:
            raise Conflict(
                "self-update is off: this control plane has no release key; set [releases] public_key "
                "(or public_key_file) in control.toml (the CLI reads it with --config) to the public key "
                "'bridgehead-control release keygen' printed",
                code="self_update_off",
            )
        return key

    async def upload(
        self, version: str, signature: str, chunks: AsyncIterator[bytes], actor: Actor
    ) -> tuple[Release, bool]:
        """Keep the release streamed in ``chunks`` if ``signature`` is the release key's over
        ``version`` and its SHA-256; ``(release, True)`` if new, ``(release, False)`` if it was
        kept already with the same bytes. Refused (nothing kept): ``Conflict`` without a key or
        for other bytes under a kept version, ``Invalid`` (``bad_signature``, ...),
        ``LimitExceeded`` past ``[releases] max_release_bytes``."""
        key = self._key()
        _version(version)
        try:
            decode_signature(signature)
        except BadSignature as exc:
            raise Invalid(exc.message, code=exc.code) from None
        limit = self.config.releases.max_release_bytes
        try:
            received = await self.files.receive(chunks, limit)
        except ReleaseTooLarge as exc:
            raise LimitExceeded(f"{exc.message} ([releases] max_release_bytes)", code=exc.code) from None
        try:
            if received.size == 0:
                raise Invalid("the release is empty: send the binary as the request body", code="empty_release")
            try:
                verify(key, version, received.sha256, signature)
            except BadSignature as exc:
                raise Invalid(exc.message, code=exc.code) from None
            async with self._commit:
                return await self._keep(version, received, signature.strip(), actor)
        finally:
            self.files.discard(received)  # the temporary file, unless commit renamed it

    async def _keep(self, version: str, received: Received, signature: str, actor: Actor) -> tuple[Release, bool]:
        """Record the release, then put its file in place. The store decides, in one
        transaction, which upload owns a version (also against another process, the CLI); only
        an upload of the recorded bytes ever writes the version's file, so the file cannot
        differ from its row. A crash between the two leaves a row without its file: agents
        asking for it are told it is missing, and uploading the same bytes again puts it back."""
        kept = await self.store.release(version)
        created = False
        if kept is None:
            now = time.time()
            row = ReleaseRow(version, received.size, received.sha256, signature, now, actor.id)
            try:
                kept = await self.store.add_release(row)
            except ReleaseConflict:  # another process kept other bytes meanwhile
                raise _exists(await self.store.release(version)) from None
            created = kept == row
        if kept.sha256 != received.sha256:
            raise _exists(kept)
        if created or not self.files.path(version).exists():
            await asyncio.to_thread(self.files.commit, received, version)
        if created:
            detail = {"version": version, "size": kept.size, "sha256": kept.sha256}
            await self.store.audit(actor, "release.upload", detail, kept.uploaded_at)
        return release_view(kept), created

    async def list(self) -> ReleaseList:
        return ReleaseList(releases=[release_view(r) for r in await self.store.releases()])

    async def set_wanted(self, cluster: str, version: str | None, actor: Actor) -> ClusterRelease:
        """The version ``cluster``'s agents should run from now on (``None``: none); the release
        must be uploaded. A running control plane's courier offers it within ``poll_s``."""
        _check_cluster(cluster)
        if version is not None and await self.store.release(_version(version)) is None:
            raise NotFound(
                f"no release {version!r}: upload it first (POST /api/v1/releases or 'bridgehead-control release "
                "upload')",
                code="release_not_found",
            )
        if version is not None and not self.files.path(version).exists():  # a crash mid-upload: see _keep
            raise NotFound(
                f"release {version!r} is recorded but its file {self.files.path(version)} is missing: upload the "
                "same binary again",
                code="release_not_found",
            )
        now = time.time()
        await self.store.set_wanted_release(cluster, version, now)
        await self.store.audit(actor, "release.set", {"cluster": cluster, "version": version}, now)
        return await self.cluster(cluster)

    async def cluster(self, cluster: str) -> ClusterRelease:
        """The cluster's wanted version, and each of its agents' release and last update report."""
        _check_cluster(cluster)
        wanted = (await self.store.wanted_releases()).get(cluster)
        links = self.dispatcher.links if self.dispatcher is not None else {}
        agents: list[ClusterAgent] = []
        after = ""
        while True:
            page = await self.store.list_agents(after, AGENT_PAGE)
            for agent in page:
                if agent.cluster != cluster or agent.revoked_at is not None:
                    continue
                link = links.get(agent.name)
                last = await self.store.updates(agent.name, limit=1)
                agents.append(
                    ClusterAgent(
                        name=agent.name,
                        connected=link is not None,
                        version=link.version if link is not None else agent.version,
                        last_update=update_view(last[0]) if last else None,
                    )
                )
            if len(page) < AGENT_PAGE:
                break
            after = page[-1].name
        return ClusterRelease(
            cluster=cluster,
            version=wanted[0] if wanted else None,
            set_at=wanted[1] if wanted else None,
            agents=agents,
        )


def _exists(kept: ReleaseRow | None) -> Conflict:
    sha = kept.sha256[:16] if kept is not None else "?"
    version = kept.version if kept is not None else "this version"
    return Conflict(
        f"release {version} exists with other bytes (sha256 {sha}...): a version names one binary for good; "
        "give the new binary a new version",
        code="release_exists",
    )
