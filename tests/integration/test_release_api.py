"""Releases on a real control plane: a key made and a binary signed by the CLI, uploads through
the API (kept only when the signature holds), wanted versions per cluster, the CLI writing on
the data dir of the running server, and enrolment pinning the release key in the agent."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, ControlPlane, run_cli, scaled

CLI = "bridgehead.control.cli"
MAX_RELEASE_BYTES = 64 * 1024


@dataclass
class Keyed:
    control: ControlPlane
    key_file: Path
    public_key: str
    workdir: Path

    def binary(self, name: str, size: int = 10_000) -> Path:
        path = self.workdir / name
        path.write_bytes(os.urandom(size))
        return path

    def sign(self, path: Path, version: str) -> str:
        return run_cli(
            CLI, "release", "sign", str(path), "--version", version, "--key", str(self.key_file)
        ).stdout.strip()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """A control plane with a release key made by ``release keygen`` (read from its .pub file)."""
    workdir = tmp_path_factory.mktemp("releases")
    key_file = workdir / "release-key.pem"
    printed = run_cli(CLI, "release", "keygen", "--out", str(key_file)).stdout
    public_key = (workdir / "release-key.pem.pub").read_text().strip()
    assert f'public_key = "{public_key}"' in printed
    assert 0o600 == key_file.stat().st_mode & 0o777
    extra = (
        f'[releases]\npublic_key_file = "{workdir / "release-key.pem.pub"}"\nmax_release_bytes = {MAX_RELEASE_BYTES}\n'
    )
    control = ControlPlane(workdir, extra_config=extra)
    try:
        yield Keyed(control.start(), key_file, public_key, workdir)
    finally:
        control.stop()


def upload(
    control: ControlPlane, version: str, signature: str, body: bytes | Iterable[bytes], token: str = ""
) -> tuple[int, Any]:
    """POST the binary as the body, as curl --data-binary would (bytes: with a Content-Length;
    an iterable: chunked, so only the server's count can stop it)."""
    query = urllib.parse.urlencode({"version": version, "signature": signature})
    headers = {"Authorization": f"Bearer {token or control.admin_token}", "Content-Type": "application/octet-stream"}
    url = f"{control.url}/api/v1/releases?{query}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=scaled(30), context=control.context) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def kept_files(control: ControlPlane) -> list[str]:
    releases = control.data_dir / "releases"
    return sorted(str(p.relative_to(releases)) for p in releases.rglob("*") if p.is_file())


def test_only_a_release_signed_by_the_release_key_is_kept(keyed: Keyed) -> None:
    """A good upload is kept (once); a tampered binary or signature, or the signature of
    another version, is refused with bad_signature and leaves nothing behind."""
    control, api = keyed.control, keyed.control.api()
    binary = keyed.binary("good.bin")
    signature = keyed.sign(binary, "1.1.0")
    status, release = upload(control, "1.1.0", signature, binary.read_bytes())
    assert 201 == status, release
    assert ("1.1.0", 10_000, signature) == (release["version"], release["size"], release["signature"])
    assert (200, release) == upload(control, "1.1.0", signature, binary.read_bytes())  # the same bytes again

    tampered = bytearray(binary.read_bytes())
    tampered[5000] ^= 1
    for version, sig, body in (
        ("1.1.1", keyed.sign(binary, "1.1.1"), bytes(tampered)),  # a byte of the binary flipped
        (
            "1.1.2",
            base64.b64encode(b"\1" + base64.b64decode(keyed.sign(binary, "1.1.2"))[1:]).decode(),
            binary.read_bytes(),
        ),
        ("1.1.3", signature, binary.read_bytes()),  # 1.1.0's signature: not for this version
    ):
        status, body_ = upload(control, version, sig, body)
        assert (422, "bad_signature") == (status, body_["error"]["code"]), body_
        assert "signature does not match" in body_["error"]["message"]
    status, body_ = upload(control, "1.1.4", "not-base64!", binary.read_bytes())
    assert (422, "bad_signature") == (status, body_["error"]["code"])

    status, listed = api.request("GET", "/api/v1/releases", token=control.token("viewer"))
    assert (200, ["1.1.0"]) == (status, [r["version"] for r in listed["releases"]])
    assert ["1.1.0.bin"] == kept_files(control)
    assert binary.read_bytes() == (control.data_dir / "releases" / "1.1.0.bin").read_bytes()


def test_other_bytes_under_a_kept_version_a_large_upload_and_a_viewer_are_refused(keyed: Keyed) -> None:
    """A version names one binary for good; past max_release_bytes is a 413 however it is sent;
    uploading takes an admin. None of these leaves a file."""
    control = keyed.control
    first, second = keyed.binary("first.bin"), keyed.binary("second.bin")
    assert 201 == upload(control, "2.0.0", keyed.sign(first, "2.0.0"), first.read_bytes())[0]
    status, body = upload(control, "2.0.0", keyed.sign(second, "2.0.0"), second.read_bytes())
    assert (409, "release_exists") == (status, body["error"]["code"])
    assert first.read_bytes() == (control.data_dir / "releases" / "2.0.0.bin").read_bytes()

    big = keyed.binary("big.bin", MAX_RELEASE_BYTES + 1)
    signature = keyed.sign(big, "2.1.0")
    status, body = upload(control, "2.1.0", signature, big.read_bytes())  # refused by its Content-Length
    assert (413, "too_large") == (status, body["error"]["code"]), body
    data = big.read_bytes()
    status, body = upload(control, "2.1.0", signature, (data[i : i + 4096] for i in range(0, len(data), 4096)))
    assert (413, "too_large") == (status, body["error"]["code"]), body  # chunked: refused by the count
    assert "max_release_bytes" in body["error"]["message"]

    status, body = upload(
        control, "2.2.0", keyed.sign(first, "2.2.0"), first.read_bytes(), token=control.token("viewer")
    )
    assert 403 == status, body
    assert "2.0.0.bin" in kept_files(control)
    assert not any(f.startswith((".incoming/", "2.1.0", "2.2.0")) for f in kept_files(control))


def test_a_clusters_wanted_release_is_set_audited_and_cleared(keyed: Keyed) -> None:
    """Only an uploaded version can be wanted, only by an admin; setting it is audited."""
    control, api = keyed.control, keyed.control.api()
    binary = keyed.binary("wanted.bin")
    assert 201 == upload(control, "3.0.0", keyed.sign(binary, "3.0.0"), binary.read_bytes())[0]
    status, body = api.request("PUT", "/api/v1/clusters/east/release", {"version": "9.9.9"})
    assert (404, "release_not_found") == (status, body["error"]["code"])
    status, body = api.request(
        "PUT", "/api/v1/clusters/east/release", {"version": "3.0.0"}, token=control.token("operator")
    )
    assert 403 == status
    status, body = api.request("PUT", "/api/v1/clusters/east/release", {"version": "3.0.0"})
    assert (200, "east", "3.0.0") == (status, body["cluster"], body["version"])
    status, body = api.request("GET", "/api/v1/clusters/east/release", token=control.token("viewer"))
    assert (200, "3.0.0", []) == (status, body["version"], body["agents"])
    status, audit = api.request("GET", "/api/v1/audit?action=release.set")
    assert [{"cluster": "east", "version": "3.0.0"}] == [e["detail"] for e in audit["entries"]]
    status, audit = api.request("GET", "/api/v1/audit?action=release.upload")
    assert "3.0.0" in [e["detail"]["version"] for e in audit["entries"]]
    status, body = api.request("PUT", "/api/v1/clusters/east/release", {"version": None})
    assert (200, None, None) == (status, body["version"], body["set_at"])
    status, body = api.request("PUT", "/api/v1/clusters/a%20b/release", {"version": None})
    assert (422, "invalid_cluster") == (status, body["error"]["code"])


def test_the_cli_uploads_and_sets_on_the_data_dir_of_the_running_server(keyed: Keyed) -> None:
    """release upload checks the signature like the API; what it and release set write, the server reads."""
    control, api = keyed.control, keyed.control.api()
    data_dir, config = str(control.data_dir), str(control.config)
    binary = keyed.binary("cli.bin")
    signature = keyed.sign(binary, "4.0.0")
    tampered = keyed.binary("cli-tampered.bin")
    refused = run_cli(
        CLI,
        "release",
        "upload",
        str(tampered),
        "--version",
        "4.0.0",
        "--signature",
        signature,
        "--data-dir",
        data_dir,
        "--config",
        config,
        check=False,
    )
    assert 1 == refused.returncode and "signature does not match" in refused.stderr, refused.stderr
    run_cli(
        CLI,
        "release",
        "upload",
        str(binary),
        "--version",
        "4.0.0",
        "--signature",
        signature,
        "--data-dir",
        data_dir,
        "--config",
        config,
    )
    run_cli(CLI, "release", "set", "--cluster", "west", "--version", "4.0.0", "--data-dir", data_dir)
    unknown = run_cli(
        CLI, "release", "set", "--cluster", "west", "--version", "4.0.1", "--data-dir", data_dir, check=False
    )
    assert 1 == unknown.returncode and "no release '4.0.1'" in unknown.stderr
    listed = run_cli(CLI, "release", "list", "--data-dir", data_dir).stdout
    assert "4.0.0" in listed and "west" in listed
    document = json.loads(run_cli(CLI, "release", "list", "--data-dir", data_dir, "--json").stdout)
    assert "4.0.0" == document["wanted"]["west"]["version"]

    status, releases = api.request("GET", "/api/v1/releases")
    assert {"version": "4.0.0", "uploaded_by": "cli"}.items() <= next(
        r for r in releases["releases"] if r["version"] == "4.0.0"
    ).items()
    assert "4.0.0" == api.request("GET", "/api/v1/clusters/west/release")[1]["version"]
    assert binary.read_bytes() == (control.data_dir / "releases" / "4.0.0.bin").read_bytes()


def test_enrolment_pins_the_release_key_in_the_agent(keyed: Keyed) -> None:
    """The enrolment answer carries the release key; the agent keeps it (0600) as release-key."""
    control = keyed.control
    agent = Agent(keyed.workdir / "agents", "pinned-agent", [control.url], cluster="pins")
    agent.enroll(control.enrollment_token("pins"))
    assert keyed.public_key == (agent.dir / "data" / "release-key").read_text().strip()
    assert 0o600 == (agent.dir / "data" / "release-key").stat().st_mode & 0o777
    status, body = control.api().request("GET", "/api/v1/clusters/pins/release")
    assert (200, [{"name": "pinned-agent", "connected": False, "version": "", "last_update": None}]) == (
        status,
        body["agents"],
    )


def test_without_a_release_key_self_update_is_off(control_factory: Any, tmp_path: Path) -> None:
    """No [releases] public_key: uploads are refused naming the setting, agents pin no key."""
    control = control_factory()
    status, body = upload(control, "1.0.0", base64.b64encode(bytes(64)).decode(), b"binary")
    assert (409, "self_update_off") == (status, body["error"]["code"])
    assert "[releases] public_key" in body["error"]["message"]
    agent = Agent(tmp_path / "agents", "unpinned-agent", [control.url])
    agent.enroll(control.enrollment_token())
    assert "" == (agent.dir / "data" / "release-key").read_text().strip()
