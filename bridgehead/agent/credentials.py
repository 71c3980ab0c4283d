"""The agent's credentials kept current over its session: job-signing keys the control plane
rotates (pinned only when a trusted key endorses them) and its client certificate (renewed
once a third of its life is left, over the authenticated session)."""

from __future__ import annotations

import logging
import time

from bridgehead.agent.identity import Identity, cert_expiry, cert_public_key, make_csr
from bridgehead.protocol import Certificate, Renew, Welcome
from bridgehead.protocol.signing import OfferVerifier

log = logging.getLogger("bridgehead.agent")


class Credentials:
    def __init__(self, identity: Identity, verifier: OfferVerifier) -> None:
        self.identity = identity
        self.verifier = verifier
        self.renewing = False  # a renew is on its way; cleared per session (a lost one is asked again)

    def learn_signing_keys(self, welcome: Welcome) -> None:
        """Pin the signing keys a trusted key endorses (a rotation on the control plane)."""
        learned = self.verifier.learn(welcome.signing_keys)
        if learned:
            known = {k.key_id for k in self.identity.signing_keys}
            self.identity.save_signing_keys(self.identity.signing_keys + [k for k in learned if k.key_id not in known])
            log.info("pinned new job-signing key(s): %s", ", ".join(k.key_id for k in learned))

    def renewal_due(self) -> Renew | None:
        """A request for a new certificate once a third of the current one's life is left."""
        if self.renewing or not self.identity.certificate:
            return None
        not_before, not_after = self.identity.cert_window()
        if time.time() < not_after - (not_after - not_before) / 3:
            return None
        self.renewing = True
        log.info(
            "client certificate expires %s: asking for a new one",
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(not_after)),
        )
        return Renew(csr=make_csr(self.identity.key, self.identity.agent).decode())

    def on_certificate(self, message: Certificate) -> None:
        self.renewing = False
        pem = message.certificate.encode()
        try:
            if cert_public_key(pem) != self.identity.public_key:
                raise ValueError("it is for another key")
        except ValueError as exc:
            log.error("the control plane sent a certificate this agent cannot use (%s): kept the old one", exc)
            return
        self.identity.save_certificate(pem)
        log.info("client certificate renewed until %s", cert_expiry(pem).strftime("%Y-%m-%d %H:%M"))
