"""The release service over a real store (the memory backend) and real files: a release whose
row outlived its file (a crash mid-upload) cannot be wanted, and the same upload again repairs it."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bridgehead.control.config import ControlConfig, ReleasesSection
from bridgehead.control.releases.files import ReleaseFiles
from bridgehead.control.releases.signature import sign
from bridgehead.control.services.errors import Conflict, Invalid, NotFound
from bridgehead.control.services.releases import ReleaseService
from bridgehead.control.store.base import CLI, ReleaseRow
from bridgehead.control.store.memory import MemoryStore

BINARY = b"#!/bin/sh\necho a release\n"


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def service(tmp_path: Path, key: Ed25519PrivateKey) -> ReleaseService:
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    config = ControlConfig(releases=ReleasesSection(public_key=public))
    return ReleaseService(config, MemoryStore(), ReleaseFiles(tmp_path))


async def test_a_row_without_its_file_is_not_wanted_until_uploaded_again(
    service: ReleaseService, key: Ed25519PrivateKey
) -> None:
    sha = hashlib.sha256(BINARY).hexdigest()
    signature = sign(key, "1.0", sha)
    await service.store.add_release(ReleaseRow("1.0", len(BINARY), sha, signature, 1.0, "cli"))  # then the crash
    with pytest.raises(NotFound, match="file .* is missing"):
        await service.set_wanted("default", "1.0", CLI)
    release, created = await service.upload("1.0", signature, body(BINARY), CLI)
    assert ("1.0", False) == (release.version, created)
    assert BINARY == service.files.path("1.0").read_bytes()
    assert "1.0" == (await service.set_wanted("default", "1.0", CLI)).version


async def test_refusals_keep_nothing(service: ReleaseService, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    sha = hashlib.sha256(BINARY).hexdigest()
    with pytest.raises(Invalid, match="empty"):
        await service.upload("1.0", sign(key, "1.0", hashlib.sha256(b"").hexdigest()), body(b""), CLI)
    with pytest.raises(Invalid, match="signature does not match"):
        await service.upload("1.0", sign(Ed25519PrivateKey.generate(), "1.0", sha), body(BINARY), CLI)
    with pytest.raises(Invalid, match="not valid"):
        await service.upload("../1.0", sign(key, "1.0", sha), body(BINARY), CLI)
    assert [] == await service.store.releases()
    assert [] == [p for p in (tmp_path / "releases").rglob("*") if p.is_file()]


async def test_without_a_key_uploads_are_refused_naming_the_setting(tmp_path: Path) -> None:
    service = ReleaseService(ControlConfig(), MemoryStore(), ReleaseFiles(tmp_path))
    with pytest.raises(Conflict, match=r"\[releases\] public_key"):
        await service.upload("1.0", base64.b64encode(bytes(64)).decode(), body(BINARY), CLI)
