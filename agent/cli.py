"""``bridgehead-agent``: enrol once, then run (as a service).

    bridgehead-agent enroll --config agent.toml --token TOKEN
    bridgehead-agent run --config agent.toml
    bridgehead-agent check --config agent.toml     # validate config and plugins, then exit

Every failure is one line on stderr and a non-zero exit code (2: configuration, 3: enrolment).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from agent import __version__
from agent.commands import run_command
from agent.config import AgentConfig, check_profiles, load_config
from agent.errors import ConfigError
from agent.logs import configure_logging
from agent.plugin_loader import AnyPlugin, load_plugins
from agent.sdk import Profile

log = logging.getLogger("bridgehead.agent")


def _load(path: str) -> tuple[AgentConfig, dict[str, AnyPlugin], dict[str, Profile]]:
    config = load_config(path)
    configure_logging(config.agent.log_level, config.agent.log_format)
    plugins_dir = Path(config.agent.plugins_dir) if config.agent.plugins_dir else None
    if plugins_dir is not None and not plugins_dir.is_dir():
        raise ConfigError(path, "agent.plugins_dir", f"{plugins_dir} is not a directory")
    plugins = load_plugins(plugins_dir, config.agent.disabled_plugins)
    profiles = check_profiles(config, {name: p.profile_type for name, p in plugins.items()})
    return config, plugins, profiles


def cmd_check(args: argparse.Namespace) -> int:
    config, plugins, profiles = _load(args.config)
    print(
        f"{config.path}: ok; plugins: {', '.join(sorted(plugins)) or 'none'}; "
        f"connections: {', '.join(sorted(profiles)) or 'none'}"
    )
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from agent.enroll import enroll

    config = load_config(args.config)
    configure_logging(config.agent.log_level, config.agent.log_format)
    agent_id = enroll(config, _token(args))
    print(
        f"enrolled {config.agent.name} in cluster {config.agent.cluster} as {agent_id}; "
        f"identity stored in {config.agent.data_dir}"
    )
    return 0


def _token(args: argparse.Namespace) -> str:
    """The token from --token, --token - (standard input) or --token-file: the last two keep
    it out of the process list and the shell's history."""
    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError("--token-file", "", f"cannot read {args.token_file}: {exc.strerror}") from None
    if args.token == "-":  # noqa: S105 - the stdin marker, not a secret
        return sys.stdin.readline().strip()
    return str(args.token)


def cmd_run(args: argparse.Namespace) -> int:
    from agent.identity import load_identity
    from agent.service import AgentService

    config, plugins, profiles = _load(args.config)
    identity = load_identity(Path(config.agent.data_dir))
    if (identity.agent, identity.cluster) != (config.agent.name, config.agent.cluster):
        raise ConfigError(
            config.path,
            "agent",
            f"name/cluster {config.agent.name}/{config.agent.cluster} differ from the enrolled identity "
            f"{identity.agent}/{identity.cluster}; enrol again to change them",
        )

    async def main() -> None:
        service = AgentService(config, identity, plugins, profiles)
        loop = asyncio.get_running_loop()
        if sys.platform != "win32":  # the Windows service wrapper calls service.stop() itself
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, service.stop)
        log.info(
            "agent %s (cluster %s) starting; plugins: %s", identity.agent, identity.cluster, ", ".join(sorted(plugins))
        )
        await service.run()
        log.info("agent stopped")

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it runs (not on Windows) and is installed: the agent's round trip for a
    job is mostly event-loop and socket work, which it does in C (bench/ssh_latency.py's
    floor, docs/choices.md). Else asyncio's own loop."""
    if sys.platform == "win32":
        return None
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    return uvloop.new_event_loop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridgehead-agent", description="The Bridgehead relay agent.")
    parser.add_argument("--version", action="version", version=f"bridgehead-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enroll", help="trade a one-time token for this agent's identity")
    p.add_argument("--config", required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--token", help="the enrolment token, or - to read it from standard input")
    source.add_argument("--token-file", help="a file holding the enrolment token")
    p.set_defaults(func=cmd_enroll)
    p = sub.add_parser("run", help="connect to the control plane and run jobs until stopped")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check", help="validate the configuration and plugins, then exit")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
