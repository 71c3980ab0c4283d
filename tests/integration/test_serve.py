"""Both HTTP servers start and stop through one helper (``bridgehead.core.serve``): they say
where they listen, a SIGTERM is a graceful stop with exit code 0 even the moment they say it,
Ctrl-C is an interrupt (130), and a port in use is one line and exit code 2."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from bridgehead_testing.harness import ControlPlane, scaled, wait_until

SANDBOX = [sys.executable, "-m", "bridgehead_sandbox", "serve"]
CONTROL = [sys.executable, "-m", "bridgehead.control.cli", "serve"]


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def wait_serving(proc: subprocess.Popen[bytes], log: Path, scheme: str) -> int:
    """The port from the server's "serving on" line, as soon as the line is there."""

    def port() -> int | None:
        assert proc.poll() is None, log.read_text()
        found = re.search(rf"serving on {scheme}://127\.0\.0\.1:(\d+)", log.read_text())
        return int(found[1]) if found else None

    found: int = wait_until(port, 30, f"the 'serving on' line in {log}", interval=0.005)
    return found


def ended(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=scaled(30))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {scaled(30):g} s after {sig.name}") from None


def test_the_sandbox_reports_the_port_it_picked_and_stops_on_sigterm_with_exit_0(tmp_path: Path) -> None:
    """``--listen 127.0.0.1:0``: the logged port answers; SIGTERM then ends it cleanly (exit 0)."""
    log = tmp_path / "sandbox.log"
    proc = spawn([*SANDBOX, "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"], log)
    port = wait_serving(proc, log, "http")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sandbox/health", timeout=scaled(10)) as response:  # noqa: S310 - loopback
        assert 200 == response.status

    assert 0 == ended(proc, signal.SIGTERM)
    assert "bridgehead-sandbox stopped" in log.read_text()


def test_a_sigterm_as_soon_as_the_control_plane_says_where_it_listens_is_a_clean_stop(tmp_path: Path) -> None:
    """SIGTERM the moment the "serving on" line is logged (uvicorn may not have taken over the
    signal yet): the control plane stops gracefully with exit 0, not killed by the signal."""
    log = tmp_path / "control.log"
    proc = spawn([*CONTROL, "--data-dir", str(tmp_path / "control"), "--listen", "127.0.0.1:0"], log)
    wait_serving(proc, log, "https")

    assert 0 == ended(proc, signal.SIGTERM), log.read_text()
    assert "Traceback" not in log.read_text()


def test_sigterm_stops_a_serving_control_plane_with_exit_0_and_ctrl_c_with_130(tmp_path: Path) -> None:
    """A control plane that answers its health check: SIGTERM exits 0; on a restart, SIGINT
    (Ctrl-C) also stops it gracefully and ends the command as an interrupt, 130."""
    control = ControlPlane(tmp_path).start()
    assert 0 == control.stop(), control.log_text()

    control.start()
    assert control.proc is not None
    assert 130 == ended(control.proc, signal.SIGINT), control.log_text()
    assert "Traceback" not in control.log_text()


def test_a_port_in_use_is_one_line_and_exit_code_2_for_both_servers(tmp_path: Path) -> None:
    """Both bind their socket before uvicorn starts, so a taken port is a configuration error."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for name, argv in (("bridgehead-sandbox", SANDBOX), ("bridgehead-control", CONTROL)):
            data_dir = tmp_path / name
            result = subprocess.run(
                [*argv, "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
                capture_output=True,
                text=True,
                timeout=scaled(60),
            )
            lines = result.stderr.strip().splitlines()
            assert 2 == result.returncode, (name, result.stderr)
            assert [f"{name}: --listen: cannot listen on 127.0.0.1:{port}: Address already in use"] == lines
