"""``service install|uninstall|start|stop|status`` with systemd: a ``ServiceController``.

``install`` makes the unprivileged system user if it is missing, makes the data dir (owned by
that user, mode 0700, contents included: an agent enrolled as root before would otherwise
not read its own key), writes the unit (``core.service_units``) and, when systemd is the
init system, reloads it and enables (and starts) the service. Where systemd is not running
(a container, a chroot, a build machine) the unit is installed and it says so in one line.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bridgehead.core.service_control import ServiceError
from bridgehead.core.service_units import UnitSpec, render_unit

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
# What the unit's sandbox hides from the service: ProtectHome=yes and PrivateTmp=yes.
HIDDEN_FROM_SERVICE = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")  # noqa: S108 - paths checked, not used
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
SYSTEMCTL_TIMEOUT_S = 60


def systemd_running() -> bool:
    """``sd_booted(3)``: systemd is the init system exactly when this directory exists."""
    return Path("/run/systemd/system").is_dir()


def init_name() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def not_running_note(name: str) -> str:
    return (
        f"systemd is not running here (PID 1 is {init_name()}): the unit is installed but not enabled; "
        f"where systemd runs: systemctl enable --now {name}"
    )


def hidden_from_service(path: Path) -> str | None:
    """The sandbox setting that would hide ``path`` from the service, if any."""
    for top in HIDDEN_FROM_SERVICE:
        if path == Path(top) or Path(top) in path.parents:
            return "PrivateTmp=yes" if top.endswith("tmp") else "ProtectHome=yes"
    return None


@dataclass
class Account:
    user: str
    group: str
    uid: int
    gid: int
    created: bool


def ensure_user(name: str, home: Path) -> Account:
    """The system user ``name`` (and its group), made with ``useradd`` if missing; its home is
    the data dir (as the .deb's postinst makes it), never created by useradd."""
    if not USER_NAME.fullmatch(name):
        raise ServiceError(f"--user {name!r}: not a valid user name (lower case letters, digits, '_', '-')")
    created = False
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        argv = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", str(home)]
        argv += ["--shell", "/usr/sbin/nologin", "--comment", "Bridgehead service", name]
        _run(argv, f"create the user {name}")
        entry = pwd.getpwnam(name)
        created = True
    group = grp.getgrgid(entry.pw_gid).gr_name
    return Account(name, group, entry.pw_uid, entry.pw_gid, created)


def prepare_data_dir(path: Path, account: Account) -> None:
    """``path`` and all in it owned by the account; the directory itself mode 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for root, dirs, files in os.walk(path):
        for entry in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(entry, account.uid, account.gid, follow_symlinks=False)
    path.chmod(0o700)


def readable_by(path: Path, account: Account) -> bool:
    """Whether the account may read ``path`` by its mode bits (ACLs aside)."""
    st = path.stat()
    if st.st_uid == account.uid:
        return bool(st.st_mode & 0o400)
    if st.st_gid in {account.gid, *os.getgrouplist(account.user, account.gid)}:
        return bool(st.st_mode & 0o040)
    return bool(st.st_mode & 0o004)


def _run(argv: list[str], what: str) -> str:
    try:
        # S603: argv is useradd/systemctl with our own arguments (a user name checked above).
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"cannot {what}: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ServiceError(f"cannot {what}: {argv[0]} exited {done.returncode}: {detail[-1] if detail else ''}")
    return done.stdout


def _systemctl(*args: str) -> str:
    return _run([shutil.which("systemctl") or "/usr/bin/systemctl", *args], f"run systemctl {' '.join(args)}")


@dataclass
class SystemdController:
    """``spec`` is needed by ``install`` only (it comes from the program's configuration)."""

    name: str
    unit_dir: Path = SYSTEM_UNIT_DIR
    spec: UnitSpec | None = None
    config_file: Path | None = None  # the service must be able to read it

    @property
    def unit_path(self) -> Path:
        return self.unit_dir / f"{self.name}.service"

    @property
    def managed(self) -> bool:
        """systemctl acts on this unit: systemd runs and the unit is where it looks."""
        return systemd_running() and self.unit_dir.resolve() == SYSTEM_UNIT_DIR.resolve()

    def install(self, start: bool) -> list[str]:
        spec = self.spec
        if spec is None:
            raise ServiceError("install needs the unit's settings (made from the configuration)")
        if os.geteuid() != 0:
            raise ServiceError("service install needs root: it creates a user, owns the data dir to it, writes a unit")
        seen = [("ExecStart", Path(spec.exec_start[0])), ("data dir", Path(spec.data_dir))]
        seen += [("--config", self.config_file)] if self.config_file is not None else []
        for what, path in seen:
            setting = hidden_from_service(path)
            if setting is not None:
                raise ServiceError(f"{what} {path} would be hidden from the service by {setting}: put it elsewhere")
        try:
            render_unit(spec)  # a path systemd cannot take fails here, before any change
        except ValueError as exc:
            raise ServiceError(str(exc)) from None
        account = ensure_user(spec.user, Path(spec.data_dir))
        lines = [f"created system user {account.user}" if account.created else f"user {account.user} exists"]
        spec_for_account = spec if spec.group == account.group else _with_group(spec, account.group)
        prepare_data_dir(Path(spec.data_dir), account)
        lines.append(f"data dir {spec.data_dir}: owned by {account.user}, mode 0700")
        if self.config_file is not None and not readable_by(self.config_file, account):
            lines.append(
                f"warning: {account.user} cannot read {self.config_file}: "
                f"chgrp {account.group} {self.config_file} && chmod 0640 {self.config_file}"
            )
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        staging = self.unit_path.with_name(f".{self.unit_path.name}.tmp")
        staging.write_text(render_unit(spec_for_account))
        staging.chmod(0o644)
        os.replace(staging, self.unit_path)  # a reader sees the old unit or the new, whole
        lines.append(f"wrote {self.unit_path}")
        if self.managed:
            _systemctl("daemon-reload")
            # --no-block: the agent says READY only once connected; install must not wait on that.
            _systemctl("enable", *(["--now", "--no-block"] if start else []), f"{self.name}.service")
            lines.append(f"enabled{' and started' if start else ''} {self.name}: systemctl status {self.name}")
        elif systemd_running():
            lines.append(f"not enabled: systemd reads units from {SYSTEM_UNIT_DIR}, not {self.unit_dir}")
        else:
            lines.append(not_running_note(self.name))
        return lines

    def start(self) -> list[str]:
        self._require_managed()
        _systemctl("start", "--no-block", f"{self.name}.service")
        return [f"starting {self.name}: systemctl status {self.name}"]

    def stop(self) -> list[str]:
        self._require_managed()
        _systemctl("stop", f"{self.name}.service")  # waits for the drain (TimeoutStopSec)
        return [f"stopped {self.name}"]

    def remove(self) -> list[str]:
        if not self.unit_path.exists():
            return [f"{self.name}: not installed ({self.unit_path} absent); nothing to do"]
        lines = []
        if self.managed:
            _systemctl("disable", "--now", f"{self.name}.service")
            lines.append(f"stopped and disabled {self.name}")
        self.unit_path.unlink()
        lines.append(f"removed {self.unit_path} (the user and the data dir stay: they hold the identity)")
        if self.managed:
            _systemctl("daemon-reload")
        return lines

    def status(self) -> tuple[bool, list[str]]:
        if not self.unit_path.exists():
            return False, [f"{self.name}: not installed ({self.unit_path} absent)"]
        settings = dict(
            line.split("=", 1) for line in self.unit_path.read_text().splitlines() if "=" in line and line[:1].isupper()
        )
        lines = [
            f"{self.name}: installed at {self.unit_path}",
            f"runs: {settings.get('ExecStart', '?')}",
            f"as user {settings.get('User', '?')}; writes only {settings.get('ReadWritePaths', '?')}",
        ]
        if not self.managed:
            lines.append(
                not_running_note(self.name) if not systemd_running() else f"not managed by systemd from {self.unit_dir}"
            )
            return True, lines
        shown = _systemctl(
            "show", f"{self.name}.service", "--property=ActiveState,SubState,UnitFileState,MainPID,StatusText"
        )
        props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        lines.append(
            f"state: {props.get('ActiveState', '?')} ({props.get('SubState', '?')}), "
            f"{props.get('UnitFileState', '?')}, main PID {props.get('MainPID', '?')}"
        )
        if props.get("StatusText"):
            lines.append(f"status: {props['StatusText']}")
        return props.get("ActiveState") == "active", lines

    def _require_managed(self) -> None:
        if not self.unit_path.exists():
            raise ServiceError(f"{self.name} is not installed ({self.unit_path} absent): service install first")
        if not systemd_running():
            raise ServiceError(f"systemd is not running here (PID 1 is {init_name()}): nothing can start or stop it")
        if not self.managed:
            raise ServiceError(f"systemd reads units from {SYSTEM_UNIT_DIR}, not {self.unit_dir}")


def _with_group(spec: UnitSpec, group: str) -> UnitSpec:
    """An existing user's primary group may not share its name."""
    return dataclasses.replace(spec, group=group)
