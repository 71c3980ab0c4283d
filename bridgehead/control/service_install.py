"""``bridgehead-control service ...`` on Linux: a systemd ``ServiceController`` for ``serve``
(``core.service_control.add_service_commands``). There is no Windows service for the control
plane."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bridgehead.core.errors import ConfigError
from bridgehead.core.service_control import ServiceController, ServiceError, program_path
from bridgehead.core.service_units import DEFAULT_USER

DEFAULT_DATA_DIR = "/var/lib/bridgehead-control"


def install_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="control.toml (default: none, the built-in defaults)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"its data dir (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--user", default=DEFAULT_USER, help=f"the user it runs as (default {DEFAULT_USER})")
    parser.add_argument("--executable", help="the program the unit starts (default: this one, where it runs from)")


def controller(args: argparse.Namespace) -> ServiceController:
    if sys.platform == "win32":
        raise ServiceError("the control plane runs as a service on Linux (systemd) only")
    from bridgehead.core.service_linux import SYSTEM_UNIT_DIR, SystemdController
    from bridgehead.core.service_units import control_unit

    unit_dir = Path(args.unit_dir) if args.unit_dir else SYSTEM_UNIT_DIR
    if args.service_action != "install":
        return SystemdController("bridgehead-control", unit_dir)
    config = Path(args.config).absolute() if args.config else None
    if config is not None and not config.is_file():
        raise ConfigError(str(config), "", "no such file")
    executable, frozen = program_path("bridgehead-control", args.executable)
    data_dir = str(Path(args.data_dir).absolute())
    spec = control_unit(executable, data_dir, str(config) if config else None, user=args.user, frozen=frozen)
    return SystemdController(spec.name, unit_dir, spec, config)
