"""Release files on the control plane: streamed in and hashed, refused past their limit with
nothing left behind, renamed whole, read back in bounded ranges; versions checked before they
touch a path. And the ``[releases]`` configuration's checks."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridgehead.control.config import load_control_config
from bridgehead.control.releases.files import InvalidVersion, ReleaseFiles, ReleaseMissing, ReleaseTooLarge
from bridgehead.core.errors import ConfigError
from bridgehead.protocol.messages import MAX_RELEASE_CHUNK

KEY = base64.b64encode(bytes(range(32))).decode()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_an_upload_is_hashed_committed_and_read_back(tmp_path: Path) -> None:
    files = ReleaseFiles(tmp_path)
    received = await files.receive(chunks(b"abc", b"defg"), max_bytes=7)
    assert (7, hashlib.sha256(b"abcdefg").hexdigest()) == (received.size, received.sha256)
    assert tmp_path / "releases" / "1.0.bin" == files.commit(received, "1.0")
    assert not received.tmp_path.exists()
    assert (b"cde", b"fg", b"") == (files.read("1.0", 2, 3), files.read("1.0", 5, 100), files.read("1.0", 7, 1))
    assert 0o600 == (tmp_path / "releases" / "1.0.bin").stat().st_mode & 0o777


async def test_an_upload_past_its_limit_leaves_nothing(tmp_path: Path) -> None:
    files = ReleaseFiles(tmp_path)
    with pytest.raises(ReleaseTooLarge, match="8-byte limit"):
        await files.receive(chunks(b"12345", b"6789"), max_bytes=8)
    assert [] == list((tmp_path / "releases" / ".incoming").iterdir())


@pytest.mark.parametrize("version", ["../x", "a/b", ".hidden", "1..2", "", "x" * 65, "v 1"])
def test_a_version_that_could_name_another_path_is_refused(tmp_path: Path, version: str) -> None:
    with pytest.raises(InvalidVersion, match="not valid"):
        ReleaseFiles(tmp_path).path(version)


async def test_reads_of_a_missing_release_or_past_its_end_say_so(tmp_path: Path) -> None:
    files = ReleaseFiles(tmp_path)
    with pytest.raises(ReleaseMissing, match="no file"):
        files.read("2.0", 0, 10)
    files.commit(await files.receive(chunks(b"abc"), max_bytes=10), "2.0")
    with pytest.raises(ReleaseMissing, match="past its end"):
        files.read("2.0", 4, 10)
    with pytest.raises(ValueError, match="a read is 1 to"):
        files.read("2.0", 0, MAX_RELEASE_CHUNK + 1)


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "control.toml"
    path.write_text(text)
    return path


def test_the_release_key_comes_from_the_config_or_its_file(tmp_path: Path) -> None:
    assert b"" == load_control_config(None).releases.key
    assert (
        bytes(range(32))
        == load_control_config(str(config(tmp_path, f'[releases]\npublic_key = "{KEY}"\n'))).releases.key
    )
    (tmp_path / "release.pub").write_text(KEY + "\n")
    text = f'[releases]\npublic_key_file = "{tmp_path / "release.pub"}"\n'
    assert bytes(range(32)) == load_control_config(str(config(tmp_path, text))).releases.key


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (f'public_key = "{KEY}"\npublic_key_file = "x"', "releases.public_key_file", "not both"),
        ('public_key = "not base64!"', "releases.public_key", "not base64"),
        ('public_key = "AAAA"', "releases.public_key", "32 bytes, this is 3"),
        ('public_key_file = "/nonexistent/release.pub"', "releases.public_key_file", "cannot read"),
        ("chunk_bytes = 1048576\n[server]\nmax_message_bytes = 1048576", "releases.chunk_bytes", "at most half"),
        ("max_release_bytes = 600000000", "releases.max_release_bytes", "<= 536870912"),
    ],
)
def test_a_bad_releases_section_names_its_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_control_config(str(config(tmp_path, f"[releases]\n{text}\n")))
    assert key == caught.value.key
    assert problem in caught.value.problem
