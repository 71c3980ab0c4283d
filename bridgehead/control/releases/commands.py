"""``bridgehead-control release ...``: the release key, signing (offline), and releases on the
data dir beside a running control plane (docs/packaging.md, "Releases on the control plane").

    release keygen --out FILE                  a new release key: FILE (private, 0600), FILE.pub
    release sign FILE --version V --key KEYFILE                      prints the signature (base64)
    release upload FILE --version V --signature SIG --data-dir DIR [--config control.toml]
    release set --cluster C (--version V | --none) --data-dir DIR
    release list --data-dir DIR [--json] [--updates N]   releases, wanted versions, update reports

``keygen`` and ``sign`` touch no data dir: run them on the machine that keeps the release key,
which need not be (and better is not) the control plane. ``upload`` checks the signature with
the configured public key exactly as the API does; a running control plane notices what
``upload`` and ``set`` wrote within ``[releases] poll_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridgehead.control.config import ControlConfig, load_control_config
from bridgehead.control.releases.files import InvalidVersion, ReleaseFiles, check_version
from bridgehead.control.releases.signature import sign
from bridgehead.control.services.errors import ServiceError
from bridgehead.control.services.releases import ClusterRelease, Release, ReleaseService
from bridgehead.control.store.base import CLI, Store
from bridgehead.core.errors import BridgeheadError

T = TypeVar("T")
READ_CHUNK = 1024 * 1024


class ReleaseCommandError(BridgeheadError):
    """The command refused or failed; its message says why (one line, exit code 1)."""

    exit_code = 1


def _version(version: str) -> str:
    try:
        return check_version(version)
    except InvalidVersion as exc:
        raise ReleaseCommandError(f"--version: {exc.message}") from None


def _with_service(args: argparse.Namespace, config: ControlConfig, work: Callable[[ReleaseService], Awaitable[T]]) -> T:
    """Run ``work`` on the data dir's store (the CLI's own connection beside a running server)."""
    from bridgehead.control.plane import open_store  # with the dispatcher and the sinks: loaded when used

    data_dir = Path(args.data_dir)

    async def run() -> T:
        store = open_store(data_dir, config)
        try:
            return await work(ReleaseService(config, store, ReleaseFiles(data_dir)))
        except ServiceError as exc:
            raise ReleaseCommandError(exc.message) from None
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    public = out.with_name(out.name + ".pub")
    for path in (out, public):
        if path.exists():
            raise ReleaseCommandError(f"{path} exists: a release key is not overwritten (choose another --out)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public_b64 = base64.b64encode(raw).decode()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ReleaseCommandError(f"cannot create {out}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    public.write_text(public_b64 + "\n")
    print(f"release key written to {out} (keep it off the control plane; it signs what agents install)")
    print(f"public key (also in {public}): {public_b64}")
    print("add to the control plane's control.toml, before agents enrol:")
    print("[releases]")
    print(f'public_key = "{public_b64}"')
    return 0


def _sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ReleaseCommandError(f"--key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise ReleaseCommandError(f"--key {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseCommandError(f"--key {path}: not an Ed25519 key (make one with 'release keygen')")
    return key


def cmd_sign(args: argparse.Namespace) -> int:
    version = _version(args.version)
    key = _load_key(Path(args.key))
    try:
        sha256, _ = _sha256_of(Path(args.file))
    except OSError as exc:
        raise ReleaseCommandError(f"{args.file}: {exc.strerror}") from None
    print(sign(key, version, sha256))
    return 0


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            yield chunk


def cmd_upload(args: argparse.Namespace) -> int:
    version = _version(args.version)
    path = Path(args.file)
    if not path.is_file():
        raise ReleaseCommandError(f"{path}: no such file")
    config = load_control_config(args.config)

    async def upload(releases: ReleaseService) -> tuple[Release, bool]:
        return await releases.upload(version, args.signature, _file_chunks(path), CLI)

    release, created = _with_service(args, config, upload)
    what = "uploaded" if created else "already uploaded with these bytes:"
    print(f"{what} release {release.version} ({release.size} bytes, sha256 {release.sha256})")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    version = None if args.none else _version(args.version)

    async def set_wanted(releases: ReleaseService) -> ClusterRelease:
        return await releases.set_wanted(args.cluster, version, CLI)

    _with_service(args, ControlConfig(), set_wanted)
    if version is None:
        print(f"cluster {args.cluster}: no wanted release (agents stay on what they run)")
    else:
        print(f"cluster {args.cluster}: wanted release {version}; a running control plane offers it within seconds")
    return 0


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_list(args: argparse.Namespace) -> int:
    async def read(releases: ReleaseService) -> tuple[Any, ...]:
        store: Store = releases.store
        return await store.releases(), await store.wanted_releases(), await store.updates(limit=args.updates)

    releases, wanted, updates = _with_service(args, ControlConfig(), read)
    if args.json:
        document = {
            "releases": [dataclasses.asdict(r) for r in releases],
            "wanted": {c: {"version": v, "set_at": at} for c, (v, at) in wanted.items()},
            "updates": [dataclasses.asdict(u) for u in updates],
        }
        print(json.dumps(document, indent=2))
        return 0
    print("releases:")
    _table(
        [("VERSION", "SIZE", "SHA256", "UPLOADED", "BY")]
        + [(r.version, str(r.size), r.sha256[:16], _when(r.uploaded_at), r.uploaded_by) for r in releases]
    )
    print("\nwanted:")
    _table([("CLUSTER", "VERSION", "SET")] + [(c, v, _when(at)) for c, (v, at) in sorted(wanted.items())])
    print("\nupdates (newest first):")
    _table(
        [("AT", "AGENT", "CLUSTER", "VERSION", "STATE", "MESSAGE")]
        + [(_when(u.at), u.agent, u.cluster, u.version, u.state, u.message) for u in updates]
    )
    return 0


def add_release_commands(sub: Any) -> None:
    """``release ...`` under the program's subcommands (``sub``: its ``add_subparsers()``)."""
    p = sub.add_parser("release", help="agent releases: the release key, signing, upload, wanted versions")
    rsub = p.add_subparsers(dest="action", required=True)
    c = rsub.add_parser("keygen", help="make a release key (run it where releases are signed, not on the server)")
    c.add_argument("--out", required=True, metavar="FILE", help="the private key (PEM, 0600); FILE.pub the public")
    c.set_defaults(func=cmd_keygen)
    c = rsub.add_parser("sign", help="sign a release binary offline; prints the signature (base64)")
    c.add_argument("file", metavar="FILE")
    c.add_argument("--version", required=True)
    c.add_argument("--key", required=True, metavar="KEYFILE", help="the private key 'release keygen' wrote")
    c.set_defaults(func=cmd_sign)
    c = rsub.add_parser("upload", help="keep a signed release on the data dir (checked like the API's upload)")
    c.add_argument("file", metavar="FILE")
    c.add_argument("--version", required=True)
    c.add_argument("--signature", required=True, metavar="SIG")
    c.add_argument("--data-dir", required=True)
    c.add_argument("--config", help="control.toml (its [releases] public_key checks the signature)")
    c.set_defaults(func=cmd_upload)
    c = rsub.add_parser("set", help="the release a cluster's agents should run (they move one at a time)")
    c.add_argument("--cluster", required=True)
    which = c.add_mutually_exclusive_group(required=True)
    which.add_argument("--version")
    which.add_argument("--none", action="store_true", help="no wanted release: agents stay on what they run")
    c.add_argument("--data-dir", required=True)
    c.set_defaults(func=cmd_set)
    c = rsub.add_parser("list", help="releases, wanted versions per cluster, recent update reports")
    c.add_argument("--data-dir", required=True)
    c.add_argument("--updates", type=int, default=100, help="how many update reports, newest (default 100)")
    c.add_argument("--json", action="store_true", help='print {"releases", "wanted", "updates"} as JSON')
    c.set_defaults(func=cmd_list)
