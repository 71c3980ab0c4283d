"""The agent's identity in data_dir (bridgehead/agent/identity.py): enrolled, complete,
readable, its key loads, it names the configured agent; and the client certificate's window.

The certificate is renewed over the session once a third of its life is left, so one that
gets close to its end means the agent has not been connecting: a warning within
``CERT_WARN_DAYS`` (or within the last third of a shorter life), a failure once expired.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

from bridgehead.agent.config import AgentSection
from bridgehead.agent.doctor.findings import Finding, fail, ok, warn
from bridgehead.agent.identity import (
    CERT_FILE,
    IDENTITY_FILE,
    KEY_FILE,
    SERVER_CA_FILE,
    Identity,
    NotEnrolled,
    cert_public_key,
    load_identity,
)

CERT_WARN_DAYS = 14
# Windows keeps access in ACLs; st_mode's permission bits say nothing there.
POSIX_MODES = os.name == "posix"
ENROL = "enrol the agent: 'bridgehead-agent enroll --config PATH --token -' with a token from the control plane"
ENROL_AGAIN = "enrol the agent again: 'bridgehead-agent enroll --config PATH --token -' with a new token"
_FILES = (IDENTITY_FILE, KEY_FILE, CERT_FILE, SERVER_CA_FILE)


class IdentityCheck:
    def __init__(self, agent: AgentSection, now: datetime.datetime | None = None) -> None:
        self.agent = agent
        self.data_dir = Path(agent.data_dir)
        self.identity: Identity | None = None
        self._now = now

    def check_identity(self) -> Finding:
        """Blocking (files): run it in a thread."""
        if not (self.data_dir / IDENTITY_FILE).exists():
            return fail(f"not enrolled: {self.data_dir} holds no {IDENTITY_FILE}", ENROL)
        for name in _FILES:
            path = self.data_dir / name
            try:
                path.read_bytes()
            except FileNotFoundError:
                return fail(f"{path} is missing: the identity is incomplete", ENROL_AGAIN)
            except OSError as exc:
                return fail(
                    f"cannot read {path}: {exc.strerror}",
                    "run doctor as the agent's own user, and give that user the data_dir (chown -R)",
                )
        try:
            identity = load_identity(self.data_dir)
        except NotEnrolled as exc:
            return fail(str(exc), ENROL_AGAIN)
        except (ValueError, TypeError, KeyError) as exc:  # a damaged key or identity.json
            return fail(f"the identity in {self.data_dir} is damaged: {exc}", ENROL_AGAIN)
        # Loaded: the control checks can verify the server with its pinned CA even if what
        # follows fails.
        self.identity = identity
        key_mode = stat.S_IMODE((self.data_dir / KEY_FILE).stat().st_mode)
        if POSIX_MODES and key_mode & 0o077:
            return fail(
                f"{self.data_dir / KEY_FILE} has mode {key_mode:04o}: other users can read the agent's private key",
                f"chmod 600 {self.data_dir / KEY_FILE} (and consider enrolling again with a new key)",
            )
        if (identity.agent, identity.cluster) != (self.agent.name, self.agent.cluster):
            return fail(
                f"enrolled as {identity.agent}/{identity.cluster}, but the config says "
                f"{self.agent.name}/{self.agent.cluster}",
                "set agent.name and agent.cluster back, or enrol again under the new name",
            )
        return ok(f"enrolled as {identity.agent} in cluster {identity.cluster} (id {identity.agent_id})")

    def check_certificate(self) -> Finding:
        identity = self.identity
        if identity is None:  # the chain stops at a failed identity check, so never
            raise RuntimeError("check_identity did not succeed")
        if not identity.certificate:
            return fail("no client certificate (enrolled before TLS)", ENROL_AGAIN)
        from cryptography import x509

        try:
            cert = x509.load_pem_x509_certificate(identity.certificate)
            matches = cert_public_key(identity.certificate) == identity.public_key
        except ValueError as exc:
            return fail(f"{identity.cert_file} is damaged: {exc}", ENROL_AGAIN)
        if not matches:
            return fail(f"{identity.cert_file} is for another key than {identity.key_file}", ENROL_AGAIN)
        return certificate_window(cert.not_valid_before_utc, cert.not_valid_after_utc, self._now)


def certificate_window(
    not_before: datetime.datetime, not_after: datetime.datetime, now: datetime.datetime | None = None
) -> Finding:
    now = now or datetime.datetime.now(datetime.UTC)
    until = f"{not_after:%Y-%m-%d %H:%M} UTC"
    if now < not_before:
        return fail(
            f"not valid before {not_before:%Y-%m-%d %H:%M} UTC: this machine's clock is behind",
            "set the clock right (keep the machine on NTP)",
        )
    left = not_after - now
    if left <= datetime.timedelta(0):
        return fail(
            f"expired {until}",
            "the agent could not renew it in time: enrol it again with a new token, then find why it did not connect",
        )
    days = left.total_seconds() / 86_400
    near = min(datetime.timedelta(days=CERT_WARN_DAYS), (not_after - not_before) / 3)
    if left <= near:
        return warn(
            f"expires {until} ({days:.1f} days left) and has not been renewed",
            "a connected agent renews it by itself: check that the agent runs and reaches the control plane",
        )
    return ok(f"valid until {until} ({days:.0f} days left)")
