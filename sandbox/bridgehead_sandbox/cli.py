"""``bridgehead-sandbox``: run the local stand-in for a ServiceNow instance.

    bridgehead-sandbox serve --data-dir DIR [--listen HOST:PORT] [--config sandbox.toml]

A bad configuration (file, key, port, data dir) ends the command with exit code 2 and one line
on stderr; SIGTERM or Ctrl-C stops it cleanly (in-flight requests finish, the database is
checkpointed and closed).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bridgehead.core.addresses import parse_listen
from bridgehead.core.commands import run_command
from bridgehead.core.errors import ConfigError
from bridgehead.core.logs import configure_logging
from bridgehead_sandbox import __version__
from bridgehead_sandbox.config import SandboxConfig, load_config

log = logging.getLogger("bridgehead.sandbox")

DESCRIPTION = (
    "A local STAND-IN for a ServiceNow instance, for Bridgehead's demo and tests: the Table API, "
    "the Import Set API with transform maps, OAuth tokens, rate limiting and injectable faults. "
    "It is not ServiceNow; see docs/sandbox.md for what it does and does not emulate."
)


def cmd_serve(args: argparse.Namespace) -> int:
    config: SandboxConfig = load_config(args.config)
    listen = args.listen or config.instance.listen
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise ConfigError("--listen", "", str(exc)) from None
    # Imported once the configuration is known to be good: a bad one is refused in a blink.
    from bridgehead.core.serve import HttpServer, bind
    from bridgehead_sandbox.app import Sandbox, build_app

    configure_logging(config.instance.log_level, config.instance.log_format)
    sock = bind(host, port)
    sandbox = Sandbox(Path(args.data_dir), config)
    server = HttpServer(
        build_app(sandbox),
        graceful_shutdown_s=5,
        http=sandbox.connections.protocol_class(),
        limit_concurrency=config.limits.max_connections,
        server_header=False,
    )
    actual = sock.getsockname()
    log.info(
        "bridgehead-sandbox %s: a STAND-IN for a ServiceNow instance (not ServiceNow), for demos and tests, "
        "serving on http://%s:%d (data dir %s, %d records)",
        __version__,
        actual[0],
        actual[1],
        args.data_dir,
        sandbox.store.total,
    )
    server.run([sock])
    log.info("bridgehead-sandbox stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridgehead-sandbox", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"bridgehead-sandbox {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "serve",
        help="serve the stand-in ServiceNow instance",
        description="Serve the stand-in ServiceNow instance (not ServiceNow) until SIGTERM or Ctrl-C.",
    )
    p.add_argument("--data-dir", required=True, help="where its SQLite database lives (created if missing)")
    p.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8090 or instance.listen)")
    p.add_argument("--config", help="sandbox.toml (see docs/sandbox.md); default: admin/admin, no faults")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
