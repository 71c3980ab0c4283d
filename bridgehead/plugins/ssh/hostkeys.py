"""Checking a server's host key against the profile: a pinned fingerprint or known_hosts.

An unknown or changed key is refused with an error naming the host and both fingerprints;
nothing is sent to the server (the check runs before authentication). Only with
``trust_on_first_use`` is the key of a host seen for the first time accepted, appended to
known_hosts and logged; a changed key is refused even then.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from pathlib import Path

import paramiko

from bridgehead.plugins.ssh.params import SshProfile
from bridgehead.sdk import SourceError

log = logging.getLogger("bridgehead.plugins.ssh")
# Appends to a known_hosts file, one at a time within the agent.
_RECORDING = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """As OpenSSH shows it: "SHA256:" and the unpadded base64 of the key blob's SHA-256."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def check(profile: SshProfile, host: str, port: int, key: paramiko.PKey) -> None:
    """Return if the key is the one the profile expects; raise ``SourceError`` otherwise."""
    seen = fingerprint(key)
    where = f"{host} port {port}"
    if profile.host_key is not None:
        if seen != profile.host_key:
            raise SourceError(
                f"host key of {where} is {seen}, not the pinned {profile.host_key}: refused "
                "(a changed server, or someone in the middle)",
                code="host_key_mismatch",
            )
        return
    path = Path(profile.known_hosts or "")
    name = known_hosts_name(host, port)
    known = paramiko.HostKeys()
    if path.exists():
        try:
            known.load(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise SourceError(f"known_hosts {path}: {exc}", code="host_key_unknown") from None
    entries = known.lookup(name)
    if entries is not None and key.get_name() in entries:
        expected = entries[key.get_name()]
        if expected == key:
            return
        raise SourceError(
            f"host key of {where} changed: it is {seen}, known_hosts ({path}) has {fingerprint(expected)}: "
            "refused (a rebuilt server, or someone in the middle; if the change is known, replace the line)",
            code="host_key_changed",
        )
    if entries:
        others = ", ".join(f"{t} {fingerprint(k)}" for t, k in entries.items())
        raise SourceError(
            f"host key of {where} is {key.get_name()} {seen}; known_hosts ({path}) has only {others}: refused",
            code="host_key_changed",
        )
    if not profile.trust_on_first_use:
        raise SourceError(
            f"host key of {where} is {seen}, which is not in known_hosts ({path}): refused. If it is right, add "
            f"it (ssh-keyscan -p {port} {host} >> {path}) or pin it with host_key = {seen!r}",
            code="host_key_unknown",
        )
    with _RECORDING:
        with open(path, "a", encoding="ascii") as out:
            out.write(f"{name} {key.get_name()} {key.get_base64()}\n")
    log.warning("trust_on_first_use: recorded the host key of %s, %s, in %s", where, seen, path)
