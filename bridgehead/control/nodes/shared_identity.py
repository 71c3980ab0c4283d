"""One identity for every node on one PostgreSQL database: the CA that issues the server's and
the agents' certificates, and the keys that sign job offers. An agent enrolled through any
node pins that CA and trusts those keys, so it connects to every node without enrolling again.

Each node still reads them from its data dir (``pki.Authority``: DIR/tls/ca.*;
``signing_keys.SigningKeys``: DIR/signing/), so a node settles its data dir against the
database as it starts, before either is loaded (``reconcile_identity``), in one transaction
holding an advisory lock (``store.postgres.identity``):

    database has none      the data dir's (made first if it has none) is published; of two
                           nodes starting at once on an empty database, the second waits for
                           the lock and then takes the first one's
    data dir has none      the database's is written into the data dir (its private keys
                           opened with the secret)
    both, the same CA      the signing keys follow the newest side: a ``signing-key rotate``
                           on this data dir is published, one on another node's is taken
                           (and a ``retire`` likewise)
    both, another CA       refused (``IdentityMismatch``): one line naming both fingerprints

The private keys are in the database only if ``[store] identity_secret_env`` or
``identity_secret_file`` is set, sealed with it (``sealing``); without one, the database holds
the public halves, and a node joins with a copy of another node's DIR/tls/ca.* and
DIR/signing/ (docs/operations.md, "One identity for several nodes"). The server's own
certificate (DIR/tls/server.*) stays each node's, with its own names, issued by the shared CA.

A data dir whose CA was made by a command (``ca-cert``, a token) but never served, that is one
with no server certificate and no signing keys yet, has issued nothing: it takes the
database's identity instead of being refused.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from bridgehead.control.nodes.sealing import KDF, SealBroken, Sealer, new_salt
from bridgehead.control.pki import Authority, fingerprint
from bridgehead.control.signing_keys import SigningKeys
from bridgehead.core.errors import BridgeheadError
from bridgehead.core.files import ensure_private_dir, write_private
from bridgehead.protocol import SigningKey

if TYPE_CHECKING:
    from bridgehead.control.store.base import Store
    from bridgehead.control.store.postgres.identity import IdentityDb, StoredIdentity, StoredKey

log = logging.getLogger("bridgehead.control")

CA_WHERE = "control_identity.ca_key"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a file name in DIR/signing, nothing else
COPY = "tls/ca.key, tls/ca.pem and signing/"


def key_where(key_id: str) -> str:
    """A sealed signing key's associated data: its column and its row."""
    return f"control_signing_keys.private_key:{key_id}"


class IdentityError(BridgeheadError):
    """The node cannot serve with this data dir on this database; the message says what to do."""

    exit_code = 2


class IdentityMismatch(IdentityError):
    """The data dir holds another control plane's CA than the database."""

    def __init__(self, data_dir: Path, here: str, where: str, there: str, node: str) -> None:
        super().__init__(
            f"{data_dir}: this data dir's CA (sha256 {here}) is not the control plane's CA in {where} (sha256 "
            f"{there}, published by node {node}), and every node on one database serves one identity: start "
            f"this node with an empty data dir to take the database's (agents enrolled through this data dir's "
            f"CA then enrol again), or replace its {COPY} with those of a node of that database, or give it its own "
            "database"
        )


class SigningKeysDiverged(IdentityError):
    """Both sides rotated apart: neither holds the other's keys."""

    def __init__(self, data_dir: Path, here: str, where: str, there: str) -> None:
        super().__init__(
            f"{data_dir}: this data dir's signing keys (current {here}) and those in {where} (current {there}) "
            f"were rotated apart: replace its signing/ with that of a node that signs with {there} (or remove "
            "it to take the database's), then start again"
        )


class IdentitySecretWrong(IdentityError):
    """The configured secret does not open the sealed keys."""

    def __init__(self, where: str, stored: StoredIdentity, why: str) -> None:
        super().__init__(
            f"{where}: [store] identity_secret_env/identity_secret_file does not open the control plane's keys "
            f"sealed in the database (CA sha256 {stored.ca_fingerprint}, published by node {stored.created_by}): "
            f"give this node the secret the other nodes use ({why})"
        )


class IdentityUnavailable(IdentityError):
    """The database has the identity, but not the private keys this data dir lacks."""

    def __init__(self, data_dir: Path, where: str, stored: StoredIdentity, what: str) -> None:
        if stored.sealed_ca_key is not None:
            how = (
                "set [store] identity_secret_env or identity_secret_file as on the other nodes, or copy "
                f"{COPY} of another node's data dir into this one"
            )
        else:
            how = (
                f"the database holds its public half only (node {stored.created_by} published it without [store] "
                f"identity_secret_*): copy {COPY} of another node's data dir into this one, or set one secret on "
                "every node and start a node that holds the keys first"
            )
        super().__init__(
            f"{data_dir} lacks {what} of the control plane in {where} (CA sha256 {stored.ca_fingerprint}): {how}"
        )


@dataclass(frozen=True)
class LocalKey:
    public_json: bytes
    private_pem: bytes | None


class DataDirIdentity:
    """The identity files of one data dir, in the layouts ``Authority`` and ``SigningKeys`` read."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.tls = data_dir / "tls"
        self.signing = data_dir / "signing"

    def ca_pem(self) -> bytes | None:
        path = self.tls / "ca.pem"
        return path.read_bytes() if path.exists() else None

    def ca_key(self) -> bytes | None:
        path = self.tls / "ca.key"
        return path.read_bytes() if path.exists() else None

    def current(self) -> str | None:
        path = self.signing / "current"
        return path.read_text().strip() or None if path.exists() else None

    def keys(self) -> dict[str, LocalKey]:
        found: dict[str, LocalKey] = {}
        for public in sorted(self.signing.glob("*.json")) if self.signing.exists() else []:
            private = public.with_suffix(".key")
            found[public.stem] = LocalKey(public.read_bytes(), private.read_bytes() if private.exists() else None)
        return found

    def unserved_ca(self) -> bool:
        """A CA made by a command before the node first served: nothing was issued with it yet
        (no server certificate, no signing keys: a node that served has both)."""
        return (
            self.ca_pem() is not None
            and not (self.tls / "server.pem").exists()
            and not (self.signing / "current").exists()
        )

    def write_ca(self, pem: bytes, key: bytes) -> None:
        ensure_private_dir(self.data_dir)
        ensure_private_dir(self.tls)
        write_private(self.tls / "ca.key", key)
        write_private(self.tls / "ca.pem", pem)

    def write_key(self, key_id: str, public_json: bytes, private_pem: bytes | None) -> None:
        ensure_private_dir(self.signing)
        if private_pem is not None:
            write_private(self.signing / f"{key_id}.key", private_pem)
        write_private(self.signing / f"{key_id}.json", public_json)

    def write_current(self, key_id: str) -> None:
        write_private(self.signing / "current", key_id.encode())

    def remove_key(self, key_id: str) -> None:
        (self.signing / f"{key_id}.json").unlink(missing_ok=True)
        (self.signing / f"{key_id}.key").unlink(missing_ok=True)


def reconcile_identity(store: Store, data_dir: Path, secret: bytes | None, node: str) -> None:
    """Make ``data_dir`` hold the identity of ``store``'s database, publishing it first if the
    database has none; an ``IdentityError`` when they cannot agree. Call it before
    ``Authority`` or ``SigningKeys`` read the data dir. Nothing to do on SQLite or in memory
    (one node)."""
    if "bridgehead.control.store.postgres" not in sys.modules:
        return  # no PostgreSQL store was opened (and asyncpg stays unloaded on SQLite)
    from bridgehead.control.store.postgres.identity import IdentityTables

    if not isinstance(store, IdentityTables):
        return
    where = str(getattr(store, "url", "the database"))
    files = DataDirIdentity(data_dir)
    store.with_identity(lambda db: _reconcile(db, files, secret, node, where))


async def _reconcile(db: IdentityDb, files: DataDirIdentity, secret: bytes | None, node: str, where: str) -> None:
    stored = await db.read()
    now = time.time()
    if stored is None:
        await db.insert(_publish(files, secret, node), now)
        log.info(
            "published this node's CA (sha256 %s) as the control plane's identity in %s", _ca_fingerprint(files), where
        )
        return
    sealer = _sealer(stored, secret, where)
    ca_pem = files.ca_pem()
    if ca_pem is not None and files.unserved_ca() and fingerprint(ca_pem) != stored.ca_fingerprint:
        # Made by ca-cert or a token command on the new data dir: it issued nothing, and the
        # database's CA replaces it (overwritten in place: such a command may run beside us).
        log.warning("%s: replacing a CA that never served with the control plane's from %s", files.data_dir, where)
        ca_pem = None
    if ca_pem is None:
        files.write_ca(stored.ca_pem, _open_ca(stored, sealer, files, where))
        log.info("took the control plane's CA (sha256 %s) from %s", stored.ca_fingerprint, where)
    else:
        here = fingerprint(ca_pem)
        if here != stored.ca_fingerprint:
            raise IdentityMismatch(files.data_dir, here, where, stored.ca_fingerprint, stored.created_by)
        ca_key = files.ca_key()
        if ca_key is None:
            files.write_ca(stored.ca_pem, _open_ca(stored, sealer, files, where))
        elif sealer is not None and stored.sealed_ca_key is None:
            # Published without a secret by another node; this one has the secret and the key.
            await db.set_ca_key(sealer.seal(ca_key, CA_WHERE))
    await _reconcile_keys(db, files, stored, sealer, where, now)


def _ca_fingerprint(files: DataDirIdentity) -> str:
    pem = files.ca_pem()
    return fingerprint(pem) if pem is not None else "-"


def _sealer(stored: StoredIdentity, secret: bytes | None, where: str) -> Sealer | None:
    """The sealer for ``stored``'s salt, checked against its sealed CA key: a wrong secret is
    refused even on a node whose data dir needs nothing from the database (it would seal
    what it publishes later, a rotation say, under a key the other nodes cannot open)."""
    if secret is None:
        return None
    try:
        sealer = Sealer(secret, stored.salt, stored.kdf)
        if stored.sealed_ca_key is not None:
            sealer.open(stored.sealed_ca_key, CA_WHERE)
    except SealBroken as exc:
        raise IdentitySecretWrong(where, stored, str(exc)) from None
    return sealer


def _open_ca(stored: StoredIdentity, sealer: Sealer | None, files: DataDirIdentity, where: str) -> bytes:
    if sealer is None or stored.sealed_ca_key is None:
        raise IdentityUnavailable(files.data_dir, where, stored, "the CA's private key")
    return sealer.open(stored.sealed_ca_key, CA_WHERE)  # checked by _sealer


def _publish(files: DataDirIdentity, secret: bytes | None, node: str) -> StoredIdentity:
    """This data dir's identity (made now where it has none) as rows, sealed if ``secret``."""
    from bridgehead.control.store.postgres.identity import StoredIdentity, StoredKey

    Authority(files.data_dir)  # makes the CA, or checks the one there
    SigningKeys(files.data_dir)  # makes the first key, or loads the current one
    ca_pem, ca_key, current = files.ca_pem(), files.ca_key(), files.current()
    if ca_pem is None or ca_key is None or current is None:  # just made or checked: removed since?
        raise IdentityError(f"{files.data_dir}: its CA or signing key vanished while it was published")
    salt = new_salt()
    sealer = Sealer(secret, salt) if secret is not None else None
    keys = tuple(
        StoredKey(
            key_id,
            key.public_json,
            sealer.seal(key.private_pem, key_where(key_id)) if sealer and key.private_pem else None,
            key_id == current,
        )
        for key_id, key in files.keys().items()
    )
    sealed_ca = sealer.seal(ca_key, CA_WHERE) if sealer is not None else None
    return StoredIdentity(ca_pem, fingerprint(ca_pem), sealed_ca, KDF, salt, node, keys)


async def _reconcile_keys(
    db: IdentityDb, files: DataDirIdentity, stored: StoredIdentity, sealer: Sealer | None, where: str, now: float
) -> None:
    """Bring the signing keys of both sides to the newer side's (see the module's docstring)."""
    theirs = {key.key_id: key for key in stored.keys}
    for key_id in theirs:
        if not _KEY_ID.match(key_id):
            raise IdentityError(f"{where}: control_signing_keys holds a key id that is not one: {key_id!r}")
    there = stored.current_key
    ours = files.keys()
    here = files.current()
    if here is None or here not in ours:
        # Nothing signed here yet: take them all.
        _take_keys(files, stored, sealer, where, list(theirs))
    elif here == there:
        if set(ours) < set(theirs):  # retired here: stop publishing them
            for key_id in set(theirs) - set(ours):
                await db.delete_key(key_id)
        elif set(theirs) < set(ours):  # retired on another node
            for key_id in set(ours) - set(theirs):
                files.remove_key(key_id)
        elif set(ours) != set(theirs):
            raise SigningKeysDiverged(files.data_dir, here, where, there)
        if sealer is not None:  # seal what a node without the secret published bare
            for key_id, key in ours.items():
                if key_id in theirs and theirs[key_id].sealed_private is None and key.private_pem is not None:
                    await db.put_key(_row(key_id, key, sealer, False), now)
    elif here not in theirs and there in ours and set(theirs) <= set(ours):
        # ``signing-key rotate`` on this data dir: publish the new key(s), the next node takes them.
        for key_id, key in ours.items():
            if key_id not in theirs:
                await db.put_key(_row(key_id, key, sealer, False), now)
        await db.set_current(here)
        log.info("published this data dir's rotated signing key %s as current in %s", here, where)
    elif there not in ours and here in theirs and set(ours) <= set(theirs):
        # Rotated on another node: take its new key(s).
        _take_keys(files, stored, sealer, where, [key_id for key_id in theirs if key_id not in ours])
        log.info("took the signing key %s, rotated on another node, from %s", there, where)
    else:
        raise SigningKeysDiverged(files.data_dir, here, where, there or "-")


def _row(key_id: str, key: LocalKey, sealer: Sealer | None, current: bool) -> StoredKey:
    from bridgehead.control.store.postgres.identity import StoredKey

    sealed = sealer.seal(key.private_pem, key_where(key_id)) if sealer and key.private_pem else None
    return StoredKey(key_id, key.public_json, sealed, current)


def _take_keys(
    files: DataDirIdentity, stored: StoredIdentity, sealer: Sealer | None, where: str, wanted: list[str]
) -> None:
    """Write the database's keys ``wanted`` into the data dir, then its current key's id."""
    theirs = {key.key_id: key for key in stored.keys}
    there = stored.current_key
    if there not in theirs:
        raise IdentityError(f"{where}: the control plane's identity has no current signing key")
    if theirs[there].sealed_private is None or sealer is None:
        raise IdentityUnavailable(files.data_dir, where, stored, f"the private signing key {there}")
    for key_id in wanted:
        key = theirs[key_id]
        public = msgspec.json.decode(key.public_json, type=SigningKey)
        if public.key_id != key_id:
            raise IdentityError(f"{where}: the signing key {key_id} holds the public key of {public.key_id}")
        private = None
        if key.sealed_private is not None:
            try:
                private = sealer.open(key.sealed_private, key_where(key_id))
            except SealBroken as exc:
                raise IdentitySecretWrong(where, stored, str(exc)) from None
        files.write_key(key_id, key.public_json, private)
    files.write_current(there)
