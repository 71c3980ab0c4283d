"""The agent's checks on an offer before anything of it runs: signature, address, expiry, replay."""

from __future__ import annotations

import logging
import time
from collections.abc import Container

from bridgehead.agent.journal import Journal
from bridgehead.protocol import ErrorInfo, Offer, Reject
from bridgehead.protocol.signing import OfferRefused, OfferVerifier

log = logging.getLogger("bridgehead.agent")


def refusal(offer: Offer, verifier: OfferVerifier, journal: Journal, held: Container[tuple[str, int]]) -> Reject | None:
    """A reject for an offer that must not run; None (and the offer remembered) if it may."""
    now = time.time()
    try:
        verifier.check(offer, now)
        if (offer.job_id, offer.attempt) not in held and journal.offer_seen(offer.job_id, offer.attempt):
            raise OfferRefused("offer_replayed", f"job {offer.job_id} attempt {offer.attempt} was accepted here before")
    except OfferRefused as exc:
        log.error("refused an offer for job %s attempt %d: %s", offer.job_id, offer.attempt, exc)
        return Reject(
            job_id=offer.job_id, attempt=offer.attempt, error=ErrorInfo(code=exc.code, message=exc.message[:8000])
        )
    # Remembered (in the commit that precedes the accept) until it could no longer verify.
    journal.remember_offer(offer.job_id, offer.attempt, offer.expires_at + verifier.max_skew_s, now)
    return None
