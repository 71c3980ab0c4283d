"""Migration 4: one identity for the whole control plane (its CA and job-signing keys).

Every node serves certificates from one CA and signs offers with keys the agents already
trust, so the database holds them (``bridgehead.control.nodes.shared_identity``). Private keys
are sealed (AES-256-GCM under a key derived from ``[store] identity_secret_*``,
``bridgehead.control.nodes.sealing``), or absent when no secret is configured: then only the
public halves are here, to compare against, and the nodes' data dirs are given the key files.
"""

V4 = """
-- One row (only_row is always true): the CA certificate (PEM), its SHA-256 fingerprint, its
-- sealed private key, and the salt and KDF the sealing key is derived with.
CREATE TABLE control_identity (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    ca_cert text NOT NULL,
    ca_fingerprint text NOT NULL,
    ca_key bytea,
    kdf text NOT NULL,
    salt bytea NOT NULL,
    created_by text NOT NULL,
    created_at double precision NOT NULL
);
-- The job-signing keys: the public half as agents see it (a SigningKey, JSON, with its
-- endorsement), the sealed PKCS#8 private key, and which one signs new offers.
CREATE TABLE control_signing_keys (
    key_id text PRIMARY KEY,
    public_key text NOT NULL,
    private_key bytea,
    current boolean NOT NULL DEFAULT false,
    added_at double precision NOT NULL
);
CREATE UNIQUE INDEX control_signing_keys_one_current ON control_signing_keys (current) WHERE current;
"""
