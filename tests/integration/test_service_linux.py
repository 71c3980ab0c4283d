"""The Linux service, for real: `service install|status|uninstall` writing units that
`systemd-analyze verify` accepts and making a real system user; the agent's and the control
plane's sd_notify messages read on a socket the test binds, as systemd would read them; and
the Windows service's stop path (``DrainOnStop``) driving a real agent's drain.

systemd is not PID 1 here, so nothing is enabled or started by systemd: the units are
verified, and the programs are run by the test with NOTIFY_SOCKET/WATCHDOG_USEC set.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bridgehead_testing.harness import (
    Agent,
    ControlPlane,
    agent_binary,
    agent_command,
    scaled,
    terminate,
    wait_connected,
    wait_until,
)

from bridgehead.core.service_units import PACKAGED_AGENT, PACKAGED_CONTROL, agent_unit, render_unit

AgentFactory = Callable[..., Agent]
ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"

# A drop-in plugin whose job blocks the agent's event loop: a real wedge, as a plugin calling
# a blocking library on the loop would make one.
WEDGE_PLUGIN = textwrap.dedent(
    """
    import time

    from bridgehead.sdk import JobContext, NoProfile, Params, Plugin


    class WedgeParams(Params):
        seconds: float


    class Wedge(Plugin[WedgeParams, NoProfile]):
        name = "wedge"
        params_type = WedgeParams
        safe_to_repeat = True

        async def run(self, ctx: JobContext[NoProfile], params: WedgeParams) -> None:
            time.sleep(params.seconds)  # blocks the event loop, on purpose
            await ctx.emit({"slept": params.seconds})


    PLUGIN = Wedge
    """
)


class NotifyListener:
    """systemd's side of NOTIFY_SOCKET: a datagram socket (a path, or ``@name``) whose
    messages a thread collects, each with the time it arrived."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, name="notify listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode().split("\n")))

    def fields(self) -> list[tuple[float, str]]:
        """Every field received, in order, with its datagram's arrival time."""
        with self._lock:
            return [(at, field) for at, message in self.messages for field in message]

    def texts(self) -> list[str]:
        return [field for _, field in self.fields()]

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout: float = 20) -> str:
        return str(wait_until(lambda: next((f for f in self.texts() if predicate(f)), None), timeout, what))

    def close(self) -> None:
        self._closed = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    notify = NotifyListener(str(tmp_path / "notify.sock"))
    yield notify
    notify.close()


@pytest.fixture
def abstract_listener() -> Iterator[NotifyListener]:
    notify = NotifyListener(f"@bridgehead-test-{secrets.token_hex(6)}")
    yield notify
    notify.close()


def test_agent_is_ready_only_once_connected_then_pings_reports_and_stops(
    control_factory: Callable[..., ControlPlane], agent_factory: AgentFactory, listener: NotifyListener, tmp_path: Path
) -> None:
    """No READY=1 while the control plane is down (STATUS says why); READY=1 once connected;
    WATCHDOG=1 every half interval, none while a job wedges the event loop; STOPPING=1 on
    SIGTERM, and a clean exit."""
    control = control_factory()  # heartbeat 5 s: a 2 s wedge does not cost the session
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "wedge.py").write_text(WEDGE_PLUGIN)
    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"}  # a ping every 0.5 s
    agent = agent_factory(control, start=False, env=env, plugins_dir=plugins)
    control.stop()
    agent.start()

    reconnecting = listener.wait_for(lambda f: f.startswith("STATUS=reconnecting (attempt 1)"), "a reconnecting status")
    assert "refused" in reconnecting.lower(), reconnecting
    listener.wait_for(lambda f: f.startswith("STATUS=reconnecting (attempt 2)"), "a second attempt")
    assert "READY=1" not in listener.texts(), "READY before any connection"

    control.start()
    listener.wait_for(lambda f: f == "READY=1", "READY=1 once connected")
    texts = listener.texts()
    ready_at = texts.index("READY=1")
    assert texts[ready_at + 1].startswith(f"STATUS=connected to {control.url.replace('https', 'wss')}"), texts
    assert texts[ready_at + 1].endswith("; 0 job(s) running")
    wait_connected(control.api(), [agent.name])

    def pings_after(at: float) -> list[float]:
        return [t for t, field in listener.fields() if field == "WATCHDOG=1" and t > at]

    wait_until(lambda: len(pings_after(0)) >= 3, 10, "three watchdog pings")

    api = control.api()
    started = time.monotonic()
    job = api.wait_done(api.submit("wedge", {"seconds": 2.0})["id"], timeout=30)
    assert "succeeded" == job["state"], job
    wait_until(lambda: len(pings_after(started)) >= 2, 10, "pings again after the wedge")
    times = [t for t, field in listener.fields() if field == "WATCHDOG=1"]
    longest_gap = max(b - a for a, b in zip(times, times[1:], strict=False))
    assert longest_gap >= 1.8, f"the pings went on while the loop was blocked (longest gap {longest_gap:.2f} s)"

    assert 0 == agent.stop()
    stopping = listener.texts().index("STOPPING=1")
    assert listener.texts()[stopping + 1] == "STATUS=draining: 0 job(s) running"
    assert 1 == listener.texts().count("READY=1")


def test_control_plane_is_ready_once_listening_and_stops(tmp_path: Path, abstract_listener: NotifyListener) -> None:
    """READY=1 (with a STATUS naming its URL) when it accepts connections; WATCHDOG=1; STOPPING=1
    on SIGTERM. The socket is in the abstract namespace, as systemd may give it."""
    (tmp_path / "cp").mkdir()
    control = ControlPlane(tmp_path / "cp")
    control.env = {**os.environ, "NOTIFY_SOCKET": abstract_listener.address, "WATCHDOG_USEC": "1000000"}
    try:
        control.start()
        abstract_listener.wait_for(lambda f: f == "READY=1", "READY=1")
        texts = abstract_listener.texts()
        assert texts[texts.index("READY=1") + 1] == f"STATUS=serving on {control.url}; 0 agent(s) connected"
        with socket.create_connection(("127.0.0.1", control.port), timeout=scaled(5)):
            pass  # READY meant listening
        abstract_listener.wait_for(lambda f: f == "WATCHDOG=1", "a watchdog ping")
    finally:
        code = control.stop()
    assert 0 == code
    assert "STOPPING=1" in abstract_listener.texts()


def journaled(agent: Agent, job_id: str) -> bool:
    """Whether the agent's journal (SQLite, read-only here) holds an attempt of the job."""
    path = agent.dir / "data" / "journal.db"
    if not path.exists():
        return False
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    try:
        return db.execute("SELECT 1 FROM jobs WHERE job_id=?", (job_id,)).fetchone() is not None
    except sqlite3.OperationalError:  # the agent is writing its first transaction
        return False
    finally:
        db.close()


def test_windows_stop_path_drains_a_real_agent(
    control_factory: Callable[..., ControlPlane], agent_factory: AgentFactory, tmp_path: Path
) -> None:
    """What the Windows service does, on Linux: the agent runs on a service thread, and a stop
    request from another thread (the service manager's) drains it as SIGTERM would: the job
    running then finishes and is delivered, and the run returns 0."""
    control = control_factory()
    agent = agent_factory(control, start=False)
    driver = textwrap.dedent(
        """
        import sys, threading
        from bridgehead.agent.cli import run_agent
        from bridgehead.core.service_control import DrainOnStop

        drain = DrainOnStop()
        result = []
        service = threading.Thread(target=lambda: result.append(run_agent(sys.argv[1], drain=drain)), name="SvcDoRun")
        service.start()
        sys.stdin.readline()  # the service manager's stop request
        drain.request_stop()  # SvcStop
        service.join()
        print("run returned", result)
        """
    )
    with open(agent.log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", driver, str(agent.config)], stdin=subprocess.PIPE, stdout=log, stderr=log
        )
    try:
        wait_connected(control.api(), [agent.name])
        api = control.api()
        # In the agent's journal: the agent took it (a "running" job may still be an offer in
        # flight, which a drain begun before it arrives refuses: a CI run saw that).
        job_id = api.submit("echo", {"count": 2, "sleep_s": 1.5})["id"]
        wait_until(lambda: journaled(agent, job_id), 10, "the job in the agent's journal")
        assert proc.stdin is not None
        proc.stdin.write(b"stop\n")
        proc.stdin.flush()
        assert 0 == proc.wait(timeout=scaled(30)), agent.log_text()
    finally:
        terminate(proc, 10)
        if proc.stdin is not None:
            proc.stdin.close()
    assert "run returned [0]" in agent.log_text()
    assert "draining" in agent.log_text()
    job = api.job(job_id)
    assert ("succeeded", 2) == (job["state"], job["record_count"]), job


# --- service install / status / uninstall ------------------------------------------------------


@pytest.fixture
def throwaway_user() -> Iterator[str]:
    """A user name nobody has; deleted (with its group) after the test if it was made."""
    name = f"bhsvc{secrets.token_hex(4)}"
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    yield name
    subprocess.run(["userdel", name], capture_output=True, check=False)


@pytest.fixture
def service_root() -> Iterator[Path]:
    """A scratch dir outside /tmp and /home, which the unit's sandbox would hide."""
    root = Path("/var/lib") / f"bridgehead-service-test-{secrets.token_hex(4)}"
    root.mkdir(mode=0o755)
    yield root
    shutil.rmtree(root)


def linked(root: Path, program: Path) -> Path:
    """``program`` as a service would be installed: a link in ``root/bin`` (outside /tmp)."""
    link = root / "bin" / program.name
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(program)
    return link


def service(program: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*program, "service", *args], capture_output=True, text=True, timeout=scaled(60))


def verify(unit: Path) -> None:
    if not Path(SYSTEMD_ANALYZE).exists():
        pytest.fail(f"{SYSTEMD_ANALYZE} is missing: scripts/test installs the systemd package")
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (0, "") == (result.returncode, result.stderr.strip()), result.stderr


def test_agent_service_install_status_uninstall(tmp_path: Path, throwaway_user: str, service_root: Path) -> None:
    """install makes the user and the data dir (its content chowned too), writes a unit that
    systemd-analyze verify accepts and says systemd is not running; status shows it; uninstall
    removes the unit and keeps the data."""
    data = service_root / "data"
    data.mkdir()
    (data / "identity.json").write_text("{}")  # enrolled as root before the install
    config = service_root / "agent.toml"
    config.write_text(
        f'[agent]\nname = "a1"\ndata_dir = "{data}"\ndrain_timeout_s = 12\n\n[control]\nurl = "https://cp:8443"\n'
    )
    units = tmp_path / "units"
    program = agent_command()
    common = ["--unit-dir", str(units)]
    # The program as installed outside /tmp (this checkout may sit under /tmp, which the unit's
    # PrivateTmp hides: install refuses that, as the first install below shows).
    binary = agent_binary()
    installed = linked(service_root, Path(binary) if binary else Path(sys.executable).parent / "bridgehead-agent")

    in_tmp = tmp_path / "bridgehead-agent"  # tmp_path is under /tmp
    in_tmp.write_text("#!/bin/sh\n")
    in_tmp.chmod(0o755)
    hidden = service(program, "install", *common, "--config", str(config), "--executable", str(in_tmp))
    assert 1 == hidden.returncode and "hidden from the service by PrivateTmp=yes" in hidden.stderr, hidden.stderr
    missing = service(program, "install", *common, "--config", str(config), "--executable", str(tmp_path / "none"))
    assert 1 == missing.returncode and "not an executable file" in missing.stderr, missing.stderr
    first = service(
        program, "install", *common, "--user", throwaway_user, "--config", str(config), "--executable", str(installed)
    )
    assert 0 == first.returncode, first.stderr
    assert f"created system user {throwaway_user}" in first.stdout
    assert "systemd is not running here (PID 1 is " in first.stdout
    entry = pwd.getpwnam(throwaway_user)
    assert entry.pw_shell == "/usr/sbin/nologin" and entry.pw_uid < 1000, entry
    for path in (data, data / "identity.json"):
        assert (entry.pw_uid, entry.pw_gid) == (path.stat().st_uid, path.stat().st_gid), path
    assert 0o700 == stat.S_IMODE(data.stat().st_mode)

    unit = units / "bridgehead-agent.service"
    verify(unit)
    text = unit.read_text()
    assert f"ExecStart={installed} run --config {config}\n" in text
    assert f"NotifyAccess={'all' if binary else 'main'}\n" in text
    for line in ("Type=notify", "WatchdogSec=30", f"User={throwaway_user}", f"ReadWritePaths={data}"):
        assert f"\n{line}\n" in text, line
    assert "\nTimeoutStopSec=42\n" in text  # drain 12 s + delivery 10 s + margin 20 s
    assert "StateDirectory=" not in text  # only for a data dir right under /var/lib
    assert "\nCapabilityBoundingSet=\n" in text and "\nProtectSystem=strict\n" in text

    again = service(
        program, "install", *common, "--user", throwaway_user, "--config", str(config), "--executable", str(installed)
    )
    assert 0 == again.returncode and f"user {throwaway_user} exists" in again.stdout, again

    status = service(program, "status", *common)
    assert 0 == status.returncode, status
    assert f"runs: {installed} run --config {config}" in status.stdout
    assert "systemd is not running here" in status.stdout

    removed = service(program, "uninstall", *common)
    assert 0 == removed.returncode and not unit.exists(), removed
    assert (data / "identity.json").exists()
    gone = service(program, "status", *common)
    assert (3, f"bridgehead-agent: not installed ({unit} absent)\n") == (gone.returncode, gone.stdout)


def test_service_install_refuses_what_the_sandbox_would_hide(tmp_path: Path, throwaway_user: str) -> None:
    """A config in /tmp is invisible to a unit with PrivateTmp=yes: one line, exit 1, no user made."""
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nname = "a1"\ndata_dir = "{tmp_path / "data"}"\n\n[control]\nurl = "https://cp"\n')
    result = service(
        agent_command(), "install", "--unit-dir", str(tmp_path), "--user", throwaway_user, "--config", str(config)
    )
    assert 1 == result.returncode
    assert 1 == len(result.stderr.splitlines()) and "PrivateTmp=yes" in result.stderr, result.stderr
    with pytest.raises(KeyError):
        pwd.getpwnam(throwaway_user)


def test_control_service_install_writes_a_verified_unit(
    tmp_path: Path, throwaway_user: str, service_root: Path
) -> None:
    """bridgehead-control service install: the same, for `serve --data-dir`."""
    units = tmp_path / "units"
    program = [sys.executable, "-m", "bridgehead.control.cli"]
    data = service_root / "control"
    installed = linked(service_root, Path(sys.executable).parent / "bridgehead-control")
    result = service(
        program,
        *["install", "--unit-dir", str(units), "--user", throwaway_user, "--data-dir", str(data)],
        *["--executable", str(installed)],
    )
    assert 0 == result.returncode, result.stderr
    unit = units / "bridgehead-control.service"
    verify(unit)
    assert f"\nExecStart={installed} serve --data-dir {data}\n" in unit.read_text()
    assert pwd.getpwnam(throwaway_user).pw_uid == data.stat().st_uid
    assert 0 == service(program, "uninstall", "--unit-dir", str(units)).returncode
    assert not unit.exists()


def test_exec_start_quoting_is_what_systemd_reads(service_root: Path) -> None:
    """A program path with a space and a '%' reaches systemd as one existing path: verify
    checks that it is executable, so a split or a specifier expansion would fail it."""
    program = service_root / "my bin %i" / "bridgehead-agent"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    config = service_root / "agent $HOME.toml"
    unit = service_root / "bridgehead-agent.service"
    unit.write_text(render_unit(agent_unit(str(program), str(config), str(service_root / "data"))))
    assert (
        f'ExecStart="{service_root}/my bin %%i/bridgehead-agent" run --config "{service_root}/agent $$HOME.toml"'
        in (unit.read_text())
    )
    verify(unit)
    with pytest.raises(ValueError, match="whitespace"):
        render_unit(agent_unit(str(program), str(config), str(service_root / "da ta")))


def test_packaged_units_are_what_install_writes(tmp_path: Path) -> None:
    """packaging/systemd/ ships the renderer's units for the packaged layout, byte for byte; and
    systemd-analyze verify accepts them (their program swapped for one that exists here)."""
    for spec in (PACKAGED_AGENT, PACKAGED_CONTROL):
        shipped = (ROOT / "packaging" / "systemd" / f"{spec.name}.service").read_text()
        assert render_unit(spec) == shipped, f"regenerate packaging/systemd/{spec.name}.service (docs/packaging.md)"
        here = tmp_path / f"{spec.name}.service"
        here.write_text(shipped.replace(f"ExecStart={spec.exec_start[0]} ", "ExecStart=/usr/bin/true "))
        verify(here)
