"""``bridgehead-control``: serve, and manage tokens on the data dir.

    bridgehead-control serve --data-dir DIR [--listen HOST:PORT] [--config control.toml]
    bridgehead-control api-token create --data-dir DIR --role admin|operator|viewer [--name NAME]
    bridgehead-control enrollment-token create --data-dir DIR [--cluster NAME] [--ttl SECONDS]

Token commands work while the server runs (SQLite WAL allows a second writer process).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from agent.commands import run_command
from agent.errors import ConfigError
from agent.logs import configure_logging
from controlplane import __version__
from controlplane.auth import API_TOKEN_PREFIX, ENROLLMENT_TOKEN_PREFIX, ROLES, new_token, token_hash
from controlplane.config import ControlConfig, load_control_config, parse_listen
from controlplane.listening import bind

log = logging.getLogger("bridgehead.control")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from controlplane.app import ControlPlane, build_app

    config: ControlConfig = load_control_config(args.config)
    listen = args.listen or config.server.listen
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise ConfigError("--listen", "", str(exc)) from None
    configure_logging(config.server.log_level, config.server.log_format)
    sock = bind(host, port)
    control = ControlPlane(Path(args.data_dir), config)
    app = build_app(control)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            ws="websockets-sansio",
            ws_max_size=config.server.max_message_bytes + 1024,
            ws_ping_interval=None,  # agents send protocol heartbeats, answered by the gateway
            lifespan="on",
            proxy_headers=False,  # no X-Forwarded-* rewriting: the API is not served behind trusted proxies
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    )
    actual = sock.getsockname()
    log.info(
        "bridgehead-control %s serving on http://%s:%d (data dir %s)", __version__, actual[0], actual[1], args.data_dir
    )
    server.run(sockets=[sock])
    return 0


def _store(data_dir: str):  # type: ignore[no-untyped-def]
    from controlplane.app import open_store

    return open_store(Path(data_dir), ControlConfig())


def cmd_api_token(args: argparse.Namespace) -> int:
    token = new_token(API_TOKEN_PREFIX)

    async def create() -> None:
        store = _store(args.data_dir)
        now = time.time()
        await store.add_api_token(token_hash(token), args.role, args.name, now)
        await store.audit("cli", "api_token.create", {"role": args.role, "name": args.name}, now)
        await store.close()

    asyncio.run(create())
    print(token)
    return 0


def cmd_enrollment_token(args: argparse.Namespace) -> int:
    token = new_token(ENROLLMENT_TOKEN_PREFIX)
    if args.ttl <= 0:
        raise ConfigError("--ttl", "", "must be a positive number of seconds")

    async def create() -> None:
        store = _store(args.data_dir)
        now = time.time()
        await store.add_enrollment_token(token_hash(token), args.cluster, now + args.ttl, now)
        await store.audit("cli", "enrollment_token.create", {"cluster": args.cluster, "ttl_s": args.ttl}, now)
        await store.close()

    asyncio.run(create())
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridgehead-control", description="The Bridgehead control plane.")
    parser.add_argument("--version", action="version", version=f"bridgehead-control {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the control plane")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8080 or server.listen)")
    p.add_argument("--config", help="control.toml")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("api-token", help="manage API tokens")
    tsub = p.add_subparsers(dest="action", required=True)
    c = tsub.add_parser("create", help="create a token and print it (shown once)")
    c.add_argument("--data-dir", required=True)
    c.add_argument("--role", required=True, choices=ROLES)
    c.add_argument("--name", default="")
    c.set_defaults(func=cmd_api_token)
    p = sub.add_parser("enrollment-token", help="manage agent enrolment tokens")
    tsub = p.add_subparsers(dest="action", required=True)
    c = tsub.add_parser("create", help="create a one-time token and print it")
    c.add_argument("--data-dir", required=True)
    c.add_argument("--cluster", default="default")
    c.add_argument("--ttl", type=float, default=86_400.0, help="seconds until it expires (default 1 day)")
    c.set_defaults(func=cmd_enrollment_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
