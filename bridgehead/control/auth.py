"""API tokens and enrolment tokens: random, shown once, stored only as SHA-256 hashes.

The tokens carry 256 bits of entropy, so a fast hash is the right one (a password hash
defends low-entropy secrets against guessing, which these are not).
"""

from __future__ import annotations

import hashlib
import secrets

ROLES = ("viewer", "operator", "admin")
API_TOKEN_PREFIX = "bh_"  # noqa: S105 - a prefix that tells token kinds apart, not a secret
ENROLLMENT_TOKEN_PREFIX = "bhe_"  # noqa: S105 - likewise


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def new_enrollment_token(ca_sha256: str) -> tuple[str, str]:
    """``(token, secret)``: the token as printed, ``bhe_<secret>.<sha256 of the CA>``, and the
    secret part that the store keeps (hashed). The pin lets the agent trust only that CA on
    first contact, as ``kubeadm join --discovery-token-ca-cert-hash`` does."""
    secret = new_token(ENROLLMENT_TOKEN_PREFIX)
    return f"{secret}.{ca_sha256}", secret


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def role_allows(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)
