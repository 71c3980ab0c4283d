"""Unit tests of a release's download (bridgehead/agent/update/staging.py): resumable, bounded,
verified before it can run."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bridgehead.agent.update.errors import UpdateRefused
from bridgehead.agent.update.signing import sign_release
from bridgehead.agent.update.staging import Download

BINARY = b"#!/bin/sh\necho 'bridgehead-agent 2.0.0'\n" + bytes(range(256)) * 40
SHA = hashlib.sha256(BINARY).hexdigest()
LIMIT = 1 << 20


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def download(releases: Path, version: str = "2.0.0", data: bytes = BINARY) -> Download:
    return Download(releases, version, len(data), hashlib.sha256(data).hexdigest(), LIMIT)


def test_a_complete_verified_download_becomes_an_executable_release(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """finish() publishes releases/<version>/bridgehead-agent (0755) with its record; no partial remains."""
    d = download(tmp_path)
    for at in range(0, len(BINARY), 1000):
        d.write(at, BINARY[at : at + 1000])
    path = d.finish(sign_release(key, "2.0.0", SHA), raw(key))
    assert tmp_path / "2.0.0" / "bridgehead-agent" == path
    assert BINARY == path.read_bytes()
    assert 0o755 == stat.S_IMODE(path.stat().st_mode)
    info = json.loads((tmp_path / "2.0.0" / "release.json").read_bytes())
    assert (SHA, len(BINARY)) == (info["sha256"], info["size"])
    assert [] == [p.name for p in (tmp_path / ".partial").iterdir()]


def test_a_download_resumes_from_what_is_on_disk_after_a_restart(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """A new Download of the same release (an agent restarted) starts at the bytes already written."""
    first = download(tmp_path)
    first.write(0, BINARY[:3000])
    again = download(tmp_path)
    assert 3000 == again.offset
    again.write(3000, BINARY[3000:])
    assert BINARY == again.finish(sign_release(key, "2.0.0", SHA), raw(key)).read_bytes()


def test_a_partial_download_of_another_artifact_is_not_resumed(tmp_path: Path) -> None:
    """Same version, other size or hash (a re-upload): the partial bytes are dropped."""
    download(tmp_path).write(0, BINARY[:3000])
    other = BINARY[:-1] + b"!"
    assert 0 == download(tmp_path, data=other).offset


def test_a_chunk_at_the_wrong_offset_is_refused(tmp_path: Path) -> None:
    """Chunks must follow each other: a gap or an overlap is refused and nothing is written."""
    d = download(tmp_path)
    d.write(0, BINARY[:100])
    for offset in (0, 99, 101):
        with pytest.raises(UpdateRefused, match=f"offset {offset}, expected 100"):
            d.write(offset, BINARY[offset : offset + 10])
    assert 100 == d.path.stat().st_size


def test_bytes_beyond_the_announced_size_are_refused(tmp_path: Path) -> None:
    """A control plane cannot push more than it announced."""
    d = download(tmp_path)
    d.write(0, BINARY)
    with pytest.raises(UpdateRefused, match="past the announced size"):
        d.write(len(BINARY), b"x")
    assert len(BINARY) == d.path.stat().st_size


def test_a_release_over_the_agents_limit_is_refused_before_any_byte(tmp_path: Path) -> None:
    """max_bytes bounds the download whatever the control plane announces."""
    with pytest.raises(UpdateRefused, match="over this agent's limit"):
        Download(tmp_path, "2.0.0", LIMIT + 1, SHA, LIMIT)
    assert not (tmp_path / ".partial" / "2.0.0").exists()


def test_a_tampered_byte_is_refused_and_the_partial_deleted(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """One flipped byte: the hash differs from the signed one; nothing is published or kept."""
    tampered = bytearray(BINARY)
    tampered[500] ^= 0xFF
    d = download(tmp_path)  # announced with the genuine size and hash
    d.write(0, bytes(tampered))
    with pytest.raises(UpdateRefused, match="hash to .*, not the signed"):
        d.finish(sign_release(key, "2.0.0", SHA), raw(key))
    assert not d.path.exists()
    assert not (tmp_path / "2.0.0" / "bridgehead-agent").exists()
    assert 0 == download(tmp_path).offset


def test_a_tampered_signature_is_refused_and_the_partial_deleted(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Genuine bytes with a broken signature are not published."""
    signature = bytearray(sign_release(key, "2.0.0", SHA))
    signature[0] ^= 0x01
    d = download(tmp_path)
    d.write(0, BINARY)
    with pytest.raises(UpdateRefused, match="signature does not match"):
        d.finish(bytes(signature), raw(key))
    assert not d.path.exists()
    assert not (tmp_path / "2.0.0").exists()


def test_a_release_signed_by_another_key_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """The pinned key decides, not whoever signed."""
    d = download(tmp_path)
    d.write(0, BINARY)
    with pytest.raises(UpdateRefused, match="signature does not match"):
        d.finish(sign_release(Ed25519PrivateKey.generate(), "2.0.0", SHA), raw(key))
    assert not d.path.exists()


def test_an_incomplete_download_is_not_finished_but_kept(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """finish() before the last byte refuses and keeps the partial file to resume."""
    d = download(tmp_path)
    d.write(0, BINARY[:10])
    with pytest.raises(UpdateRefused, match="10 of"):
        d.finish(sign_release(key, "2.0.0", SHA), raw(key))
    assert 10 == download(tmp_path).offset


@pytest.mark.parametrize("version", ["..", "../escape", "a/../../escape", ".partial", "/etc/passwd", "2.0\\x", ""])
def test_a_version_that_could_leave_the_releases_dir_is_refused(tmp_path: Path, version: str) -> None:
    """Versions are path components: traversal and hidden names are refused before any file is made."""
    releases = tmp_path / "data" / "releases"
    with pytest.raises(UpdateRefused, match="is not valid"):
        Download(releases, version, 10, SHA, LIMIT)
    assert [] == [p for p in tmp_path.rglob("*") if p.is_file()]


def test_the_partial_file_is_private_to_the_agent(tmp_path: Path) -> None:
    """A download in progress is 0600 in a 0700 directory: no other user reads or swaps it."""
    d = download(tmp_path)
    d.write(0, BINARY[:10])
    assert 0o600 == stat.S_IMODE(os.stat(d.path).st_mode)
    assert 0o700 == stat.S_IMODE(os.stat(tmp_path / ".partial").st_mode)
