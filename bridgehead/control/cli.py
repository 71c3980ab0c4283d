"""``bridgehead-control``: serve, and manage tokens, agents and keys on the data dir.

    bridgehead-control serve --data-dir DIR [--listen HOST:PORT] [--config control.toml] [--insecure-http]
                             [--database postgresql://USER@HOST:PORT/DATABASE] [--database-wait SECONDS]
    bridgehead-control ca-cert --data-dir DIR
    bridgehead-control api-token create --data-dir DIR --role admin|operator|viewer [--name NAME] [--ttl S]
    bridgehead-control api-token list --data-dir DIR
    bridgehead-control api-token revoke ID --data-dir DIR
    bridgehead-control enrollment-token create --data-dir DIR [--cluster NAME] [--ttl S] [--uses N] [--replace NAME]
    bridgehead-control agent revoke NAME --data-dir DIR
    bridgehead-control signing-key rotate|list --data-dir DIR
    bridgehead-control servicenow check NAME --config control.toml [--sink JSON] [--data-dir DIR] [--json]
    bridgehead-control service install [--user U] [--config PATH] [--data-dir DIR] [--unit-dir DIR] [--no-start]
    bridgehead-control service uninstall|start|stop|status          # systemd
    bridgehead-control release keygen|sign|upload|set|list ...   (bridgehead.control.releases.commands)

Token commands work while the server runs (SQLite WAL allows a second writer process; on
PostgreSQL, the data dir's store.json names the database).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from bridgehead import __version__
from bridgehead.control import gc_policy, recovery, service_install
from bridgehead.control.auth import API_TOKEN_PREFIX, ROLES, new_enrollment_token, new_token, token_hash
from bridgehead.control.config import ControlConfig, StoreSection, load_control_config
from bridgehead.control.releases.commands import add_release_commands
from bridgehead.control.store.base import CLI, ApiTokenRow, Store
from bridgehead.core.addresses import is_loopback, parse_listen
from bridgehead.core.commands import run_command
from bridgehead.core.errors import ConfigError
from bridgehead.core.files import write_private
from bridgehead.core.logs import configure_logging
from bridgehead.core.sdnotify import Notifier
from bridgehead.core.serve import HttpServer, bind
from bridgehead.core.service_control import add_service_commands
from bridgehead.core.tomlconfig import convert

T = TypeVar("T")

log = logging.getLogger("bridgehead.control")


def cmd_serve(args: argparse.Namespace) -> int:
    from bridgehead.control.app import ControlPlane, build_app
    from bridgehead.control.tls import PeerCertWebSocketProtocol, prepare_tls

    # A belt to the data dir's chmod: whatever this process creates is its own alone.
    os.umask(0o077)
    config: ControlConfig = load_control_config(args.config)
    if args.database:
        # Over [store]: the backend and URL; the password's source stays the config's.
        wanted = {**msgspec.structs.asdict(config.store), "backend": "postgresql", "database": args.database}
        config.store = convert(wanted, StoreSection, "--database")
        try:
            config.store.password()
        except ConfigError as exc:
            raise ConfigError(args.config or "--database", f"store.{exc.key}", exc.problem) from None
    listen = args.listen or config.server.listen
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise ConfigError("--listen", "", str(exc)) from None
    if args.insecure_http and not is_loopback(host):
        raise ConfigError(
            "--insecure-http", "", f"plain HTTP is only for loopback addresses, not {host}: drop it to serve HTTPS"
        )
    configure_logging(config.server.log_level, config.server.log_format)
    gc_policy.tune()  # thousands of sessions: young collections less often (gc_policy.py)
    data_dir = Path(args.data_dir)
    # On PostgreSQL, a database that is away is waited for (docs/operations.md, "When
    # PostgreSQL goes away"): here before the port is bound, so that nothing connects to a node
    # that cannot answer yet, and after a failed write (the dispatcher's fail-stop).
    wait_s = None if args.database_wait is None or args.database_wait < 0 else args.database_wait
    control = recovery.open_waiting(lambda: ControlPlane(data_dir, config), config.store, wait_s)
    # After the store opened: on PostgreSQL, the data dir's CA may just have come from the
    # database (nodes/shared_identity.py), and the server certificate must be issued by that one.
    tls = None if args.insecure_http else prepare_tls(config, control.authority, host)
    control.tls = tls
    recovery.arm(config.store, wait_s)
    sock = bind(host, port)
    if tls is not None:
        write_private(control.authority.anchor_file, tls.trust_anchor_pem)
    server = HttpServer(
        build_app(control),
        graceful_shutdown_s=10,
        ws=PeerCertWebSocketProtocol,
        ws_max_size=config.server.max_message_bytes + 1024,
        ws_ping_interval=None,  # agents send protocol heartbeats, answered by the gateway
        ssl_context=tls.context if tls is not None else None,
        notifier=Notifier.from_environment(),  # under systemd: READY once listening, WATCHDOG, STATUS
        status=lambda: (
            f"serving on {scheme}://{actual[0]}:{actual[1]}; {len(control.dispatcher.links)} agent(s) connected"
        ),
    )
    actual = sock.getsockname()
    scheme = "http" if tls is None else "https"
    control.node_url = config.server.node_url or f"{scheme}://{actual[0]}:{actual[1]}"
    log.info(
        "bridgehead-control %s serving on %s://%s:%d (data dir %s)",
        __version__,
        scheme,
        actual[0],
        actual[1],
        args.data_dir,
    )
    if tls is None:
        log.warning("plain HTTP (--insecure-http): for development on loopback only; agents are not pinned to a CA")
    server.run([sock])
    return 0


def cmd_ca_cert(args: argparse.Namespace) -> int:
    from bridgehead.control.pki import Authority

    sys.stdout.write(Authority(Path(args.data_dir)).trust_anchor().decode())
    return 0


def cmd_agent_revoke(args: argparse.Namespace) -> int:
    async def revoke(store: Store) -> bool:
        return bool(await store.revoke_agent(args.name, CLI, time.time()))

    if not _with_store(args.data_dir, revoke):
        raise ConfigError("agent revoke", args.name, "no enrolled, unrevoked agent of that name")
    print(f"revoked {args.name}: a running control plane disconnects it within a second")
    return 0


def cmd_signing_key(args: argparse.Namespace) -> int:
    from bridgehead.control.signing_keys import SigningKeys

    keys = SigningKeys(Path(args.data_dir))
    if args.action == "rotate":
        new = keys.rotate()
        print(f"{new.key_id} is now the signing key (endorsed by {new.endorsed_by}); restart the control plane")
    elif args.action == "retire":
        keys.retire(args.key_id)
        print(f"{args.key_id} is no longer published")
    else:
        for key in keys.published:
            mark = "current" if key.key_id == keys.current_id else f"endorsed by {key.endorsed_by or '-'}"
            print(f"{key.key_id}  {mark}")
    return 0


def _with_store(data_dir: str, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``work`` on the data dir's store, closed whatever happens. The CLI opens its own
    connection beside a running control plane, which notices its commits (external_changes)."""
    from bridgehead.control.plane import open_store

    async def run() -> T:
        store = open_store(Path(data_dir), ControlConfig())
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_api_token(args: argparse.Namespace) -> int:
    if args.ttl is not None and args.ttl <= 0:
        raise ConfigError("--ttl", "", "must be a positive number of seconds")
    token = new_token(API_TOKEN_PREFIX)

    async def create(store: Store) -> None:
        now = time.time()
        expires_at = now + args.ttl if args.ttl is not None else None
        await store.add_api_token(token_hash(token), args.role, args.name, now, expires_at)
        detail = {"token": token_hash(token)[:12], "role": args.role, "name": args.name, "ttl_s": args.ttl}
        await store.audit(CLI, "api_token.create", detail, now)

    _with_store(args.data_dir, create)
    print(token)
    return 0


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_api_token_list(args: argparse.Namespace) -> int:
    async def read(store: Store) -> list[ApiTokenRow]:
        return await store.api_tokens()

    rows = [("ID", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED", "REVOKED")]
    for t in _with_store(args.data_dir, read):
        rows.append(
            (
                t.id,
                t.name or "-",
                t.role,
                _when(t.created_at),
                _when(t.expires_at),
                _when(t.last_used_at),
                _when(t.revoked_at),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_api_token_revoke(args: argparse.Namespace) -> int:
    async def revoke(store: Store) -> bool:
        now = time.time()
        token = await store.revoke_api_token(args.token_id, now)
        if token is not None:
            await store.audit(CLI, "api_token.revoke", {"token": token.id, "name": token.name}, now)
        return token is not None

    if not _with_store(args.data_dir, revoke):
        raise ConfigError("api-token revoke", args.token_id, "no unrevoked API token with that id (api-token list)")
    print(f"revoked {args.token_id}: a running control plane refuses it from its next request")
    return 0


def cmd_enrollment_token(args: argparse.Namespace) -> int:
    from bridgehead.control.pki import Authority, fingerprint

    if args.ttl <= 0:
        raise ConfigError("--ttl", "", "must be a positive number of seconds")
    if args.uses < 1:
        raise ConfigError("--uses", "", "must be at least 1")
    token, secret = new_enrollment_token(fingerprint(Authority(Path(args.data_dir)).trust_anchor()))

    async def create(store: Store) -> None:
        now = time.time()
        await store.add_enrollment_token(token_hash(secret), args.cluster, now + args.ttl, now, args.uses, args.replace)
        detail = {"cluster": args.cluster, "ttl_s": args.ttl, "uses": args.uses, "replace": args.replace}
        await store.audit(CLI, "enrollment_token.create", detail, now)

    _with_store(args.data_dir, create)
    print(token)
    return 0


def cmd_servicenow_check(args: argparse.Namespace) -> int:
    """The preflight of [servicenow.NAME] (docs/servicenow-setup.md): 0 all ok (warnings
    included), 1 a check failed; a bad name, sink or configuration is a ConfigError (2)."""
    import json

    import msgspec

    from bridgehead.control.sinks.preflight import Report, render, run_preflight
    from bridgehead.control.sinks.spec import SinkSpec, parse_sink

    config = load_control_config(args.config)
    instance = config.servicenow.get(args.name)
    if instance is None:
        known = ", ".join(sorted(config.servicenow)) or "none"
        where = args.config or "no --config given"
        raise ConfigError("servicenow check", args.name, f"no [servicenow.{args.name}] in {where} (it has: {known})")
    spec: SinkSpec | None = None
    if args.sink is not None:
        try:
            raw = json.loads(args.sink)
        except ValueError as exc:
            raise ConfigError("--sink", "", f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError("--sink", "", 'a JSON object, e.g. {"servicenow": "corp", "preset": "ldap_users"}')
        raw.setdefault("servicenow", args.name)
        try:
            spec = parse_sink(raw)
        except ValueError as exc:
            raise ConfigError("--sink", "", str(exc)) from None
        if spec.servicenow != args.name:
            raise ConfigError("--sink", "", f"names instance {spec.servicenow!r}, not {args.name!r}")
    if instance.auth == "oauth_refresh_token" and not args.data_dir:
        # The instance may rotate the refresh token; the new one must go where the control plane reads it.
        raise ConfigError(
            "servicenow check", args.name, "auth = oauth_refresh_token needs --data-dir (the control plane's)"
        )

    async def check() -> Report:
        from bridgehead.control.plane import open_store

        if not args.data_dir:
            return await run_preflight(args.name, instance, spec, _NoKeptTokens())
        store = open_store(Path(args.data_dir), ControlConfig())
        try:
            return await run_preflight(args.name, instance, spec, store)
        finally:
            await store.close()

    result = asyncio.run(check())
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n" if args.json else render(result))
    return 0 if result.ok else 1


class _NoKeptTokens:
    """The CLI's store of refresh tokens without a data dir: nothing kept (only used with grants
    that have no refresh token)."""

    async def refresh_token(self, instance: str) -> tuple[str, str] | None:
        return None

    async def keep_refresh_token(self, instance: str, token: str, origin: str, now: float) -> None:
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridgehead-control", description="The Bridgehead control plane.")
    parser.add_argument("--version", action="version", version=f"bridgehead-control {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the control plane")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8080 or server.listen)")
    p.add_argument("--config", help="control.toml")
    p.add_argument(
        "--database",
        help="postgresql://USER@HOST:PORT/DATABASE: the store on PostgreSQL ([store] database; password from "
        "[store] password_env or password_file)",
    )
    p.add_argument(
        "--insecure-http", action="store_true", help="serve plain HTTP (loopback addresses only; development)"
    )
    p.add_argument(
        "--database-wait",
        type=float,
        metavar="SECONDS",
        help="PostgreSQL only: how long to wait for the database when it is away, at start or after a failed "
        "write (then exit 70); 0 exits at once; default: wait until it is back (or SIGTERM)",
    )
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("ca-cert", help="print the certificate (PEM) that agents and API clients trust")
    p.add_argument("--data-dir", required=True)
    p.set_defaults(func=cmd_ca_cert)
    p = sub.add_parser("agent", help="manage enrolled agents")
    asub = p.add_subparsers(dest="action", required=True)
    c = asub.add_parser("revoke", help="refuse an agent from now on and disconnect it")
    c.add_argument("name")
    c.add_argument("--data-dir", required=True)
    c.set_defaults(func=cmd_agent_revoke)
    p = sub.add_parser("signing-key", help="the keys that sign job offers")
    ksub = p.add_subparsers(dest="action", required=True)
    for action, text in (("list", "list published keys"), ("rotate", "make a new signing key, endorsed by the old")):
        c = ksub.add_parser(action, help=text)
        c.add_argument("--data-dir", required=True)
        c.set_defaults(func=cmd_signing_key)
    c = ksub.add_parser("retire", help="stop publishing a replaced key")
    c.add_argument("key_id")
    c.add_argument("--data-dir", required=True)
    c.set_defaults(func=cmd_signing_key)
    p = sub.add_parser("servicenow", help="ServiceNow instances that sinks deliver to")
    nsub = p.add_subparsers(dest="action", required=True)
    c = nsub.add_parser("check", help="preflight: connect as the sink would and report what to fix")
    c.add_argument("name", metavar="NAME", help="the instance, [servicenow.NAME] in the configuration")
    c.add_argument("--config", help="control.toml")
    c.add_argument("--sink", metavar="JSON", help='a job\'s sink to check too, e.g. \'{"preset": "ldap_users"}\'')
    c.add_argument("--data-dir", help="the control plane's (for a rotated refresh token; needed for that grant)")
    c.add_argument("--json", action="store_true", help='print {"ok", "checks"} as the API answers')
    c.set_defaults(func=cmd_servicenow_check)
    p = sub.add_parser("api-token", help="manage API tokens")
    tsub = p.add_subparsers(dest="action", required=True)
    c = tsub.add_parser("create", help="create a token and print it (shown once)")
    c.add_argument("--data-dir", required=True)
    c.add_argument("--role", required=True, choices=ROLES)
    c.add_argument("--name", default="")
    c.add_argument("--ttl", type=float, help="seconds until it expires (default: never)")
    c.set_defaults(func=cmd_api_token)
    c = tsub.add_parser("list", help="list tokens: id, name, role, created, expires, last used, revoked")
    c.add_argument("--data-dir", required=True)
    c.set_defaults(func=cmd_api_token_list)
    c = tsub.add_parser("revoke", help="refuse a token from now on (by the id that list shows)")
    c.add_argument("token_id", metavar="ID")
    c.add_argument("--data-dir", required=True)
    c.set_defaults(func=cmd_api_token_revoke)
    p = sub.add_parser("enrollment-token", help="manage agent enrolment tokens")
    tsub = p.add_subparsers(dest="action", required=True)
    c = tsub.add_parser("create", help="create a one-time token and print it")
    c.add_argument("--data-dir", required=True)
    c.add_argument("--cluster", default="default")
    c.add_argument("--ttl", type=float, default=86_400.0, help="seconds until it expires (default 1 day)")
    c.add_argument("--uses", type=int, default=1, help="how many agents it may enrol (default 1)")
    c.add_argument("--replace", metavar="NAME", help="may enrol NAME again although it is enrolled (a new key)")
    c.set_defaults(func=cmd_enrollment_token)
    add_service_commands(sub, service_install.controller, service_install.install_options)
    add_release_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
