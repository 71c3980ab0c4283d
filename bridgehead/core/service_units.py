"""The systemd units of both programs, rendered from a few facts (pure: no I/O here).

    spec = agent_unit(executable, config, data_dir, user, drain_timeout_s, frozen)
    text = render_unit(spec)

``packaging/systemd/*.service`` are ``render_unit(PACKAGED_AGENT)`` and
``render_unit(PACKAGED_CONTROL)``, byte for byte (a test holds them to it), so the .deb and
``service install`` ship the same unit.

Choices, and why:
- ``Type=notify``: systemd calls the unit started when the program says READY (the agent once
  connected, the control plane once listening), and ``WatchdogSec`` restarts one that stops
  saying WATCHDOG (``core.sdnotify``).
- ``NotifyAccess=all`` for a frozen (PyInstaller one-file) program: its bootloader parent is
  the main PID and the Python child sends the messages, which ``main`` would drop. ``main``
  otherwise: a job's child process cannot speak for the service.
- ``KillMode=mixed``: SIGTERM goes to the main process only (the one-file bootloader passes it
  to its child), so jobs' child processes keep running through the drain; whatever is left
  after ``TimeoutStopSec`` is killed.
- No ``MemoryDenyWriteExecute``: the PowerShell plugin runs ``pwsh`` as a child, whose .NET
  JIT needs memory both writable and executable, and libffi's closures (ctypes callbacks,
  cffi) may too; the seccomp filter would apply to every child. No ``SystemCallFilter`` for
  the same reason: drivers and job commands are not ours to enumerate.
- ``CapabilityBoundingSet=`` empty: neither program needs a privilege (the control plane
  listens on a port >= 1024).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

DEFAULT_USER = "bridgehead"
WATCHDOG_S = 30
RESTART_S = 5  # a failing start costs a log line every 5 s, not a tight loop
AGENT_DELIVERY_S = 10  # after the drain, the agent's time to deliver results (service._drain)
CONTROL_GRACE_S = 10  # the control plane's graceful_shutdown_s (control/cli.py)
STOP_MARGIN_S = 20
AGENT_START_S = 300


@dataclass(frozen=True)
class UnitSpec:
    name: str  # the unit's name without ".service"
    description: str
    exec_start: Sequence[str]  # argv; [0] an absolute path
    user: str
    group: str
    data_dir: PurePosixPath  # the one place the service may write
    timeout_stop_s: int
    frozen: bool  # a PyInstaller one-file binary (see NotifyAccess above)
    timeout_start_s: int | None = None  # None: systemd's default (90 s)
    environment_file: PurePosixPath | None = None  # optional (a leading '-' in the unit)
    comment: str = ""  # lines at the top of the file


def agent_unit(
    executable: str,
    config: str,
    data_dir: str,
    user: str = DEFAULT_USER,
    group: str | None = None,
    drain_timeout_s: float = 30.0,
    frozen: bool = False,
) -> UnitSpec:
    return UnitSpec(
        name="bridgehead-agent",
        description="Bridgehead agent (outbound relay to the control plane)",
        exec_start=[executable, "run", "--config", config],
        user=user,
        group=group or user,
        data_dir=PurePosixPath(data_dir),
        # The drain, then the delivery of results, then a margin: systemd must not SIGKILL
        # an agent that is still finishing its jobs as configured.
        timeout_stop_s=math.ceil(drain_timeout_s) + AGENT_DELIVERY_S + STOP_MARGIN_S,
        # READY waits for the first connection. Until then the agent holds no job, so a
        # restart after this long without one costs nothing and clears a wedged start (the
        # watchdog only starts with READY); meanwhile STATUS says why it is not connected.
        timeout_start_s=AGENT_START_S,
        frozen=frozen,
        # Secrets named by password_env / token_env in agent.toml, readable by root only.
        environment_file=PurePosixPath(config).parent / "secrets.env",
        comment=(
            "# The Bridgehead agent as a systemd service (written by `bridgehead-agent service install`).\n"
            "# Enrol once as its user before starting it:\n"
            f"#   runuser -u {user} -- {executable} enroll --config {config} --token -\n"
        ),
    )


def control_unit(
    executable: str,
    data_dir: str,
    config: str | None,
    user: str = DEFAULT_USER,
    group: str | None = None,
    frozen: bool = False,
) -> UnitSpec:
    argv = [executable, "serve", "--data-dir", data_dir] + (["--config", config] if config else [])
    return UnitSpec(
        name="bridgehead-control",
        description="Bridgehead control plane",
        exec_start=argv,
        user=user,
        group=group or user,
        data_dir=PurePosixPath(data_dir),
        timeout_stop_s=CONTROL_GRACE_S + STOP_MARGIN_S,
        frozen=frozen,
        comment=(
            "# The Bridgehead control plane as a systemd service (written by `bridgehead-control service install`).\n"
            "# A failed store write stops it (exit 70 on SQLite; on PostgreSQL it waits for the database and\n"
            "# starts again by itself); Restart= then rebuilds its state from the store.\n"
        ),
    )


# What the packages install: the one-file agent binary in /usr/bin (the .deb), and the control
# plane from a virtualenv in /opt/bridgehead (docs/operations.md).
PACKAGED_AGENT = agent_unit(
    "/usr/bin/bridgehead-agent", "/etc/bridgehead-agent/agent.toml", "/var/lib/bridgehead-agent", frozen=True
)
PACKAGED_CONTROL = control_unit(
    "/opt/bridgehead/bin/bridgehead-control", "/var/lib/bridgehead-control", "/etc/bridgehead-control/control.toml"
)

_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def quote(arg: str) -> str:
    """One ExecStart= argument: '%' and '$' doubled (else systemd expands them as specifiers
    and variables), and double quotes, with backslash escapes, around anything not plain."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(arg):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def path_value(path: PurePosixPath) -> str:
    """A path in a setting that takes paths (no quoting there; specifiers still expand)."""
    text = str(path)
    if any(c.isspace() for c in text):
        raise ValueError(f"{text}: a path with whitespace cannot go into a systemd path setting")
    return text.replace("%", "%%")


def _state_directory(data_dir: PurePosixPath) -> list[str]:
    """For a data dir in /var/lib, systemd itself makes it (owned by User=, mode 0700) before
    each start: the unit then works even where no installer made it (ReadWritePaths= needs it)."""
    if data_dir.parent != PurePosixPath("/var/lib"):
        return []
    return [f"StateDirectory={path_value(PurePosixPath(data_dir.name))}", "StateDirectoryMode=0700"]


def render_unit(spec: UnitSpec) -> str:
    lines = [spec.comment.rstrip("\n")] if spec.comment else []
    lines += [
        "[Unit]",
        f"Description={spec.description}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        f"NotifyAccess={'all' if spec.frozen else 'main'}",
        f"WatchdogSec={WATCHDOG_S}",
        f"User={spec.user}",
        f"Group={spec.group}",
        "ExecStart=" + " ".join(quote(arg) for arg in spec.exec_start),
    ]
    if spec.environment_file is not None:
        lines.append(f"EnvironmentFile=-{path_value(spec.environment_file)}")
    lines += [
        "Restart=on-failure",
        f"RestartSec={RESTART_S}",
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        *([f"TimeoutStartSec={spec.timeout_start_s}"] if spec.timeout_start_s is not None else []),
        f"TimeoutStopSec={spec.timeout_stop_s}",
        "UMask=0077",
        "# It needs its data dir and outbound sockets, nothing else.",
        "ProtectSystem=strict",
        f"ReadWritePaths={path_value(spec.data_dir)}",
        *_state_directory(spec.data_dir),
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
