"""``bridgehead-agent service ...``: the platform's ``ServiceController`` for the agent, made
from the command's options (``core.service_control.add_service_commands``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bridgehead.core.errors import ConfigError
from bridgehead.core.service_control import ServiceController, program_path
from bridgehead.core.service_units import DEFAULT_USER

DEFAULT_CONFIG = (
    "C:\\ProgramData\\Bridgehead\\agent.toml" if sys.platform == "win32" else "/etc/bridgehead-agent/agent.toml"
)


def install_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"the agent's configuration (default {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--user",
        help=f"the account it runs as (Linux: default {DEFAULT_USER}, created if missing; "
        "Windows: default NT SERVICE\\bridgehead-agent)",
    )
    parser.add_argument("--executable", help="the program the unit starts (default: this one, where it runs from)")


def controller(args: argparse.Namespace) -> ServiceController:
    install = args.service_action == "install"
    config = Path(args.config).absolute() if install else None
    if config is not None and not config.is_file():
        raise ConfigError(str(config), "", "no such file: write the agent's configuration first (config.sample.toml)")
    if sys.platform == "win32":
        from bridgehead.agent.windows_service import DEFAULT_ACCOUNT, WindowsController

        return WindowsController(str(config) if config else None, (args.user if install else None) or DEFAULT_ACCOUNT)
    from bridgehead.core.service_linux import SYSTEM_UNIT_DIR, SystemdController

    unit_dir = Path(args.unit_dir) if args.unit_dir else SYSTEM_UNIT_DIR
    if config is None:
        return SystemdController("bridgehead-agent", unit_dir)
    from bridgehead.agent.config import load_agent_section
    from bridgehead.core.service_units import agent_unit

    section = load_agent_section(config)
    if not Path(section.data_dir).is_absolute():
        raise ConfigError(str(config), "agent.data_dir", "must be an absolute path for a service (it runs from /)")
    executable, frozen = program_path("bridgehead-agent", args.executable)
    spec = agent_unit(
        executable,
        str(config),
        section.data_dir,
        user=args.user or DEFAULT_USER,
        drain_timeout_s=section.drain_timeout_s,
        frozen=frozen,
    )
    return SystemdController(spec.name, unit_dir, spec, config)
