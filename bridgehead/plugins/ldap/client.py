"""Connecting and binding with ldap3, and ldap3's errors as job errors.

All of it is blocking; the plugin calls it in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import Mapping
from typing import Any

import ldap3
from ldap3.core import exceptions as lx

from bridgehead.plugins.ldap.params import LdapProfile, check_url
from bridgehead.plugins.ldap.values import Form, form_for
from bridgehead.sdk import Credential, InvalidParams, JobError, SourceError, SourceUnavailable

log = logging.getLogger("bridgehead.plugins.ldap")

_SEARCH_RESULT_ENTRY = 4  # LDAP protocolOp of searchResEntry


def _tls(profile: LdapProfile) -> ldap3.Tls:
    if not profile.verify:
        return ldap3.Tls(validate=ssl.CERT_NONE)
    # No ca_file: the system's trust store (ssl's default paths), still verified.
    return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=profile.ca_file, version=ssl.PROTOCOL_TLS_CLIENT)


class Live:
    """The connection being opened, for the event loop to shut down if the job is cancelled
    while the thread waits on a server that does not answer."""

    conn: ldap3.Connection | None = None


def connect(
    profile: LdapProfile, credential: Credential | None, *, read_schema: bool, live: Live | None = None
) -> ldap3.Connection:
    """A bound connection to the first of the profile's servers that answers."""
    failures: list[str] = []
    for url in profile.server_urls():
        scheme, host, port = check_url(url)
        server = ldap3.Server(
            host,
            port=port,
            use_ssl=scheme == "ldaps",
            tls=_tls(profile) if profile.uses_tls() else None,
            get_info=ldap3.SCHEMA if read_schema else ldap3.NONE,
            connect_timeout=profile.timeout_s,
        )
        user = credential.username if credential is not None else None
        password = credential.password if credential is not None else None
        conn = ldap3.Connection(
            server,
            user=user,
            password=password,
            auto_bind=ldap3.AUTO_BIND_NONE,
            raise_exceptions=True,
            read_only=True,
            receive_timeout=math.ceil(profile.timeout_s),  # ldap3 packs it into SO_RCVTIMEO: whole seconds
            return_empty_attributes=False,
            check_names=False,  # checked by the plugin against the schema it keeps (LdapPlugin._check_names)
            auto_range=True,  # AD's member;range=0-1499: ldap3 fetches the rest of the values
        )
        if live is not None:
            live.conn = conn
        try:
            conn.open()
            if profile.start_tls:
                conn.start_tls()
            if not conn.bind():
                raise lx.LDAPInvalidCredentialsResult(conn.result.get("description", "bind failed"))
            _decode_entries_raw(conn)
        except (lx.LDAPSocketOpenError, lx.LDAPSocketReceiveError, lx.LDAPSessionTerminatedByServerError) as exc:
            close(conn)
            if _is_tls_failure(exc):
                # Not a server that is down: one that cannot prove who it is. Never retried.
                raise SourceError(f"connecting to {url}: {_describe(exc)}", code="tls_failed") from None
            failures.append(f"{url}: {_describe(exc)}")
            continue
        except Exception as exc:  # noqa: BLE001 - every ldap3 error becomes a job error, with its code
            close(conn)
            raise job_error(exc, doing=f"connecting to {url}") from None
        return conn
    raise SourceUnavailable("no LDAP server answered: " + "; ".join(failures))


class RangeScratch(dict[str, list[Any]]):
    """The ``attributes`` of a raw-decoded entry: empty, but ldap3's range retrieval reads,
    extends and deletes values here as it does in ``raw_attributes``, so a missing name reads
    as no values and deleting one is not an error."""

    def __missing__(self, key: str) -> list[Any]:
        return []

    def __delitem__(self, key: str) -> None:
        self.pop(key, None)


def _decode_entries_raw(conn: ldap3.Connection) -> None:
    """Make ``conn`` decode search entries into raw attributes only.

    ldap3 decodes every entry twice: ``raw_attributes`` (bytes) and ``attributes`` (values
    formatted by its schema and case-insensitive dicts). The plugin reads only the raw ones and
    formats them itself by the directory's schema (values.py), so the second decoding was
    15-20% of the agent's time on a big search. Installed after the bind, because ldap3 reads
    the schema at bind through the ``attributes`` of the subschema entry. ``attributes`` stays
    empty, which keeps ldap3's range retrieval (auto_range) working: it merges
    ``raw_attributes`` and ``attributes`` alike (RangeScratch). Relies on ldap3 2.9's fast decoder layout
    (pinned below 3): tests/integration/test_ldap_*.py cover every path that reads entries.
    """
    strategy = conn.strategy
    decode_other = strategy.decode_response_fast

    def decode(message: dict[str, Any]) -> dict[str, Any]:
        if message["protocolOp"] != _SEARCH_RESULT_ENTRY:
            decoded: dict[str, Any] = decode_other(message)
            return decoded
        dn, attributes = message["payload"][0][3], message["payload"][1][3]
        return {
            "type": "searchResEntry",
            "raw_dn": dn,
            "dn": dn.decode("utf-8", "replace"),
            "raw_attributes": {
                a[3][0][3].decode("utf-8", "replace"): [bytes(v[3]) for v in a[3][1][3]] for a in attributes
            },
            "attributes": RangeScratch(),
        }

    strategy.decode_response_fast = decode


def forms_from_schema(conn: ldap3.Connection) -> dict[str, Form]:
    """Each attribute's JSON form, from the schema the server published at bind."""
    schema = conn.server.schema
    if schema is None:
        return {}
    types: Mapping[str, Any] = schema.attribute_types
    forms: dict[str, Form] = {}

    def syntax_of(info: Any, depth: int = 0) -> str | None:
        # An attribute may inherit its syntax from its superior (name SUP: cn SUP name).
        if info.syntax or depth > 16 or not info.superior:
            return str(info.syntax) if info.syntax else None
        parent = types.get(info.superior[0])
        return syntax_of(parent, depth + 1) if parent is not None else None

    for info in types.values():
        syntax = syntax_of(info)
        if syntax is not None:
            syntax = syntax.split("{", 1)[0]  # "1.3.6...15{256}": the length bound is not the syntax
        for name in info.name or ():
            forms[name.lower()] = form_for(syntax, bool(info.single_value), name)
    return forms


# Result codes ldap3 returns rather than raises, even with raise_exceptions: a search cut
# short by a limit still has entries, but a job that silently lost the rest would be wrong.
_LIMITS = {3: "time_limit_exceeded", 4: "size_limit_exceeded", 11: "size_limit_exceeded"}


def check_limits(conn: ldap3.Connection, *, doing: str) -> None:
    result = conn.result or {}
    code = _LIMITS.get(result.get("result", 0))
    if code is not None:
        detail = " - ".join(str(p) for p in (result.get("description"), result.get("message")) if p)
        raise SourceError(f"{doing}: the server stopped the search: {detail}", code=code)


def _is_tls_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, lx.LDAPCertificateError | ssl.SSLError) or any(
        w in text for w in ("certificate", "ssl wrapping", "hostname", "tls")
    )


def close(conn: ldap3.Connection) -> None:
    """Unbind, and close the socket whatever state the connection is in."""
    try:
        conn.unbind()
    except Exception:  # noqa: BLE001 - closing a connection that failed: nothing to add
        log.debug("closing a failed LDAP connection", exc_info=True)
    # ldap3 keeps the socket of a connect that failed, and unbind does not close it.
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, lx.LDAPOperationResult):
        parts = [exc.description or "", exc.message or ""]
        text = " - ".join(p for p in parts if p) or text
    return text or type(exc).__name__


# Result code -> (job error code, retryable).
_BY_RESULT: dict[type[BaseException], tuple[str, bool]] = {
    lx.LDAPInvalidCredentialsResult: ("auth_failed", False),
    lx.LDAPInappropriateAuthenticationResult: ("auth_failed", False),
    lx.LDAPStrongerAuthRequiredResult: ("auth_failed", False),
    lx.LDAPConfidentialityRequiredResult: ("auth_failed", False),
    lx.LDAPNoSuchObjectResult: ("no_such_object", False),
    lx.LDAPInvalidDNSyntaxResult: ("no_such_object", False),
    lx.LDAPSizeLimitExceededResult: ("size_limit_exceeded", False),
    lx.LDAPAdminLimitExceededResult: ("size_limit_exceeded", False),
    lx.LDAPTimeLimitExceededResult: ("time_limit_exceeded", False),
    lx.LDAPInsufficientAccessRightsResult: ("access_denied", False),
    lx.LDAPUnwillingToPerformResult: ("ldap_error", False),
    lx.LDAPBusyResult: ("source_unavailable", True),
    lx.LDAPUnavailableResult: ("source_unavailable", True),
}


def job_error(exc: BaseException, *, doing: str) -> JobError:
    """A job error for an ldap3 exception raised while ``doing``."""
    text = f"{doing}: {_describe(exc)}"
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, lx.LDAPInvalidFilterError | lx.LDAPInvalidScopeError | lx.LDAPAttributeError):
        return InvalidParams(text)
    if _is_tls_failure(exc):
        return SourceError(text, code="tls_failed")
    if isinstance(exc, lx.LDAPSocketOpenError | lx.LDAPSocketReceiveError | lx.LDAPSocketSendError):
        return SourceUnavailable(text)
    if isinstance(exc, lx.LDAPSessionTerminatedByServerError | lx.LDAPSocketCloseError):
        return SourceUnavailable(text)
    for cls, (code, retryable) in _BY_RESULT.items():
        if isinstance(exc, cls):
            return SourceError(text, code=code, retryable=retryable)
    if isinstance(exc, lx.LDAPOperationResult):
        return SourceError(text, code="ldap_error")
    return SourceError(text, code="ldap_error")
