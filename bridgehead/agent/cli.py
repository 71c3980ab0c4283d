"""``bridgehead-agent``: enrol once, then run (as a service).

    bridgehead-agent enroll --config agent.toml --token TOKEN
    bridgehead-agent run --config agent.toml
    bridgehead-agent check --config agent.toml     # validate config and plugins, then exit
    bridgehead-agent doctor --config agent.toml [--json] [--timeout S]   # what works, what to fix
    bridgehead-agent secret set NAME --config agent.toml  < value   # the local vault
    bridgehead-agent secret list --config agent.toml
    bridgehead-agent secret delete NAME --config agent.toml
    bridgehead-agent service install [--user bridgehead] [--config PATH] [--unit-dir DIR] [--no-start]
    bridgehead-agent service uninstall|remove|start|stop|status        # systemd, or Windows' SCM

Every failure is one line on stderr and a non-zero exit code (2: configuration, 3: enrolment).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from bridgehead import __version__
from bridgehead.agent import service_install
from bridgehead.agent.config import AgentConfig, check_profiles, check_vault_secrets, load_agent_section, load_config
from bridgehead.agent.plugin_loader import AnyPlugin, load_plugins
from bridgehead.core.commands import run_command
from bridgehead.core.errors import ConfigError
from bridgehead.core.eventloop import loop_factory
from bridgehead.core.logs import configure_logging
from bridgehead.core.redact import MIN_SECRET_LENGTH
from bridgehead.core.sdnotify import Notifier
from bridgehead.core.service_control import DrainOnStop, add_service_commands
from bridgehead.sdk import Profile

log = logging.getLogger("bridgehead.agent")


def _load(path: str) -> tuple[AgentConfig, dict[str, AnyPlugin], dict[str, Profile]]:
    config = load_config(path)
    configure_logging(config.agent.log_level, config.agent.log_format)
    plugins_dir = Path(config.agent.plugins_dir) if config.agent.plugins_dir else None
    if plugins_dir is not None and not plugins_dir.is_dir():
        raise ConfigError(path, "agent.plugins_dir", f"{plugins_dir} is not a directory")
    plugins = load_plugins(plugins_dir, config.agent.disabled_plugins)
    profiles = check_profiles(config, {name: p.profile_type for name, p in plugins.items()})
    check_vault_secrets(config)
    return config, plugins, profiles


def cmd_check(args: argparse.Namespace) -> int:
    config, plugins, profiles = _load(args.config)
    print(
        f"{config.path}: ok; plugins: {', '.join(sorted(plugins)) or 'none'}; "
        f"connections: {', '.join(sorted(profiles)) or 'none'}"
    )
    Notifier.from_environment().ready("configuration ok")  # under systemd (Type=notify): done
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Every check, one row each; a failed config is a row too, so the exit code is 0 or 1."""
    from bridgehead.agent.doctor import run_doctor

    return run_doctor(args.config, timeout_s=args.timeout, as_json=args.json)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError("give more than 0 and at most 600 seconds")
    return value


def cmd_enroll(args: argparse.Namespace) -> int:
    from bridgehead.agent.enroll import enroll

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
    return run_agent(args.config)


def run_agent(config_path: str, drain: DrainOnStop | None = None) -> int:
    """``run``; ``drain``: a service manager's stop request (the Windows service) starts the
    drain instead of SIGTERM/SIGINT, whose handlers are then not installed."""
    from bridgehead.agent.identity import load_identity
    from bridgehead.agent.service import AgentService

    # First: a local job's child process (same user) must not read this process's memory or
    # environment, which hold resolved secrets.
    make_non_dumpable()
    _launch_current_release(config_path)
    config, plugins, profiles = _load(config_path)
    identity = load_identity(Path(config.agent.data_dir))
    if (identity.agent, identity.cluster) != (config.agent.name, config.agent.cluster):
        raise ConfigError(
            config.path,
            "agent",
            f"name/cluster {config.agent.name}/{config.agent.cluster} differ from the enrolled identity "
            f"{identity.agent}/{identity.cluster}; enrol again to change them",
        )

    service: AgentService | None = None

    async def main() -> None:
        nonlocal service
        service = AgentService(config, identity, plugins, profiles, Notifier.from_environment())
        loop = asyncio.get_running_loop()
        if drain is not None:
            drain.attach(service.stop)
        elif sys.platform != "win32":  # the Windows service passes a drain
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, service.stop)
        log.info(
            "agent %s (cluster %s) starting; plugins: %s", identity.agent, identity.cluster, ", ".join(sorted(plugins))
        )
        await service.run()
        log.info("agent stopped")

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
    if service is not None and (service.updater.ready is not None or service.updater.rolling_back):
        service.updater.restart(config_path)  # drained: into the new release, or back to the base
    return 0


def _launch_current_release(config_path: str) -> None:
    """Self-update: exec the release ``releases/current`` names, after settling its trial,
    before any heavy work; returns when this binary runs the agent itself (docs/packaging.md).
    Only ``agent.data_dir`` must make sense here: the release may know config keys this binary
    does not (whoever runs reports a bad config)."""
    from bridgehead.agent.update.launcher import launch
    from bridgehead.core.tomlconfig import read_toml

    table = read_toml(config_path).get("agent")
    if not isinstance(table, dict) or not isinstance(table.get("data_dir"), str):
        return
    try:
        section = load_agent_section(config_path)
        configure_logging(section.log_level, section.log_format)
    except ConfigError:
        configure_logging()
    # `run` has no other option; rebuilt rather than taken from sys.argv, which main(argv) ignores.
    launch(Path(table["data_dir"]), __version__, Path(sys.executable), ["run", "--config", config_path])


PR_SET_DUMPABLE = 4


def make_non_dumpable() -> bool:
    """On Linux, ``prctl(PR_SET_DUMPABLE, 0)``: no core dump, and processes of the same user
    (a local job's child included) can no longer ptrace this one or read its ``/proc/PID/
    environ``, ``mem`` or ``fd`` (they become root's). True if it took effect; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols, libc's among them
        ok = bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.warning("could not make the agent process non-dumpable; local jobs could read its memory")
    return ok


def cmd_secret_set(args: argparse.Namespace) -> int:
    """The value comes from standard input (a prompt on a terminal), never from the command line."""
    from bridgehead.agent.vault import Vault, VaultError

    data_dir = Path(load_agent_section(args.config).data_dir)
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"value of secret {args.name}: ")
    else:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
    if not value:
        raise VaultError(f"secret {args.name!r}: the value on standard input is empty; nothing was stored")
    if len(value) < MIN_SECRET_LENGTH:
        raise VaultError(
            f"secret {args.name!r}: shorter than {MIN_SECRET_LENGTH} characters (it could not be masked in logs)"
        )
    vault = Vault(data_dir)
    vault.set(args.name, value)
    print(f"secret {args.name} stored in {vault.path}")
    return 0


def cmd_secret_list(args: argparse.Namespace) -> int:
    import datetime

    from bridgehead.agent.vault import Vault

    for name, set_at in Vault(Path(load_agent_section(args.config).data_dir)).entries().items():
        when = datetime.datetime.fromtimestamp(set_at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{name}\tset {when}")
    return 0


def cmd_secret_delete(args: argparse.Namespace) -> int:
    from bridgehead.agent.vault import Vault

    vault = Vault(Path(load_agent_section(args.config).data_dir))
    vault.delete(args.name)
    print(f"secret {args.name} deleted from {vault.path}")
    return 0


def _service_host() -> Callable[[], int] | None:
    """``service host``: Windows only (the entry its service control manager starts)."""
    if sys.platform != "win32":
        return None
    from bridgehead.agent.windows_service import host

    return host


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
    p = sub.add_parser("doctor", help="check config, identity, control plane, connections and data_dir; print a table")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true", help="print the checks as a JSON array")
    p.add_argument("--timeout", type=_seconds, default=5.0, metavar="S", help="seconds each check may take (5)")
    p.set_defaults(func=cmd_doctor)
    add_service_commands(sub, service_install.controller, service_install.install_options, _service_host())
    p = sub.add_parser("secret", help="manage the local encrypted vault of secrets credentials refer to")
    secret = p.add_subparsers(dest="secret_command", required=True)
    p = secret.add_parser("set", help="store a secret, its value read from standard input")
    p.add_argument("name")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_secret_set)
    p = secret.add_parser("list", help="list the secrets' names and when each was set (never values)")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_secret_list)
    p = secret.add_parser("delete", help="remove a secret")
    p.add_argument("name")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_secret_delete)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
