"""Signatures of the agent channel, sans-I/O: job offers, the hello, and key endorsements.

What is signed is a canonical encoding, rebuilt by the verifier from the fields it decoded
(JSON with sorted keys, msgspec's shortest float form), so no byte of the frame's own layout
matters and no field can be left outside the signature by reordering it.

    offer      control plane -> agent, Ed25519 by a job-signing key the agent pinned at
               enrolment: job id, attempt, plugin, params, timeout, agent, issued/expires
               and, for a sync job, the sync state its run starts from
    hello      agent -> control plane, by the agent's enrolled key: nonce, agent, cluster and
               the SHA-256 of the server certificate the agent saw (a channel binding)
    endorsement  an old signing key vouching for its successor (key rotation without
               re-enrolment: the welcome carries the chain)

A refused offer is an ``OfferRefused`` with a stable ``code`` that the agent reports in its
``reject``; nothing of the offer runs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bridgehead.protocol.messages import Offer, SigningKey

_canonical = msgspec.json.Encoder(order="sorted")
OFFER_CONTEXT = "bridgehead.offer.v1"
CONFIRM_FOLLOWS = "confirm_follows"  # appended to what an offer with that flag signs
HELLO_CONTEXT = "bridgehead.hello.v1"
KEY_CONTEXT = "bridgehead.signing-key.v1"


class OfferRefused(Exception):
    """An offer that must not run; ``code`` reaches the job's error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def offer_bytes(offer: Offer) -> bytes:
    """What an offer's signature covers: every field but the signature itself.

    ``sync_state`` is appended only when present, so an offer without one signs exactly as
    before the field existed (agents that predate it verify those); one with it does not
    verify for such an agent, which refuses it rather than run a sync from the wrong state.
    ``confirm_follows`` likewise, only when set: an agent that would not wait for the
    confirmation refuses the offer rather than run it early.
    """
    signed: list[object] = [
        OFFER_CONTEXT,
        offer.job_id,
        offer.attempt,
        offer.plugin,
        offer.params,
        offer.timeout_s,
        offer.agent,
        offer.issued_at,
        offer.expires_at,
        offer.key_id,
    ]
    if offer.sync_state is not None:
        signed.append(offer.sync_state)
    if offer.confirm_follows:  # likewise: an agent that predates it refuses such an offer
        signed.append(CONFIRM_FOLLOWS)
    return _canonical.encode(signed)


def hello_bytes(nonce: str, agent: str, cluster: str, server_cert_sha256: str) -> bytes:
    """What the hello's signature covers; ``server_cert_sha256`` is empty over plain HTTP."""
    return _canonical.encode([HELLO_CONTEXT, nonce, agent, cluster, server_cert_sha256])


def key_id(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(public_key)).hexdigest()[:16]


def raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def endorse(successor: SigningKey, by: Ed25519PrivateKey) -> SigningKey:
    """``successor`` vouched for by the key ``by`` (the one it replaces)."""
    endorsed_by = key_id(by.public_key())
    signed = _canonical.encode([KEY_CONTEXT, successor.key_id, successor.public_key, endorsed_by])
    return SigningKey(successor.key_id, successor.public_key, endorsed_by, b64(by.sign(signed)))


def public_signing_key(key: SigningKey) -> Ed25519PublicKey:
    try:
        public = Ed25519PublicKey.from_public_bytes(_unb64(key.public_key))
    except (ValueError, binascii.Error):
        raise OfferRefused("bad_signing_key", f"signing key {key.key_id!r} is not an Ed25519 public key") from None
    if key_id(public) != key.key_id:
        raise OfferRefused("bad_signing_key", f"signing key {key.key_id!r} does not match its id")
    return public


class OfferSigner:
    """The control plane's side: signs each offer with the current job-signing key."""

    def __init__(self, key: Ed25519PrivateKey, ttl_s: int = 300) -> None:
        self.key = key
        self.key_id = key_id(key.public_key())
        self.ttl_s = ttl_s

    def sign(self, offer: Offer, now: float) -> Offer:
        issued = int(now)
        # ``timeout_s`` as the float the agent decodes it to: an int would sign as ``30`` and verify as ``30.0``.
        stamped = msgspec.structs.replace(
            offer,
            timeout_s=float(offer.timeout_s),
            issued_at=issued,
            expires_at=issued + self.ttl_s,
            key_id=self.key_id,
        )
        return msgspec.structs.replace(stamped, signature=b64(self.key.sign(offer_bytes(stamped))))


class OfferVerifier:
    """The agent's side: the keys it pinned, its own name, and how much clock skew it forgives."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], agent: str, max_skew_s: float = 60.0) -> None:
        self.keys = dict(keys)
        self.agent = agent
        self.max_skew_s = max_skew_s

    def learn(self, offered: Iterable[SigningKey]) -> list[SigningKey]:
        """Pin the keys that a pinned key endorses (in any order); return those newly pinned."""
        pending = [k for k in offered if k.key_id not in self.keys]
        learned: list[SigningKey] = []
        progress = True
        while pending and progress:
            progress = False
            for key in list(pending):
                voucher = self.keys.get(key.endorsed_by)
                if voucher is None:
                    continue
                pending.remove(key)
                signed = _canonical.encode([KEY_CONTEXT, key.key_id, key.public_key, key.endorsed_by])
                try:
                    voucher.verify(_unb64(key.endorsement), signed)
                    public = public_signing_key(key)
                except (InvalidSignature, ValueError, binascii.Error, OfferRefused):
                    continue  # not vouched for: ignored, offers signed with it are refused
                self.keys[key.key_id] = public
                learned.append(key)
                progress = True
        return learned

    def check(self, offer: Offer, now: float) -> None:
        """Raise ``OfferRefused`` unless the offer is signed, intact, current and ours.
        (Replays within the validity window are the journal's to catch: it remembers.)"""
        if not offer.signature:
            raise OfferRefused("offer_unsigned", "the offer carries no signature")
        key = self.keys.get(offer.key_id)
        if key is None:
            raise OfferRefused(
                "offer_unknown_key", f"the offer is signed with key {offer.key_id!r}, which this agent does not trust"
            )
        try:
            key.verify(_unb64(offer.signature), offer_bytes(offer))
        except (InvalidSignature, ValueError, binascii.Error):
            raise OfferRefused("offer_bad_signature", "the offer's signature does not verify (tampered?)") from None
        if offer.agent != self.agent:
            raise OfferRefused("offer_misaddressed", f"the offer is addressed to agent {offer.agent!r}")
        if now > offer.expires_at + self.max_skew_s:
            raise OfferRefused(
                "offer_expired",
                f"the offer expired {now - offer.expires_at:.0f} s ago (check both clocks if this repeats)",
            )
        if now < offer.issued_at - self.max_skew_s:
            raise OfferRefused(
                "offer_not_yet_valid",
                f"the offer is issued {offer.issued_at - now:.0f} s in the future (check both clocks)",
            )
