"""systemd's notify protocol, read on real AF_UNIX datagram sockets the tests bind (a path, and
a name in the abstract namespace), as systemd would read it."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridgehead_testing.harness import wait_until_async

from bridgehead.core.sdnotify import MAX_STATUS_CHARS, Notifier, keep_watchdog, one_line
from bridgehead.core.service_control import DrainOnStop


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound at a path; and the NOTIFY_SOCKET value naming it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in the abstract namespace; and its NOTIFY_SOCKET value (``@name``)."""
    name = f"bridgehead-test-{secrets.token_hex(6)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    yield sock, "@" + name
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def pending(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock`` now (without waiting for more)."""
    out = []
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(timeout)


def test_messages_reach_a_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    """READY with its status, STATUS, WATCHDOG and STOPPING arrive as one datagram each."""
    sock, address = path_socket
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("connected to wss://cp:8443; 0 job(s) running")
    assert ["READY=1", "STATUS=connected to wss://cp:8443; 0 job(s) running"] == received(sock)
    assert notifier.status("reconnecting (attempt 4): refused")
    assert ["STATUS=reconnecting (attempt 4): refused"] == received(sock)
    assert notifier.watchdog()
    assert ["WATCHDOG=1"] == received(sock)
    assert notifier.stopping("draining: 2 job(s) running")
    assert ["STOPPING=1", "STATUS=draining: 2 job(s) running"] == received(sock)
    notifier.close()


def test_messages_reach_an_abstract_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    """``@name`` is the abstract namespace: no file, a leading NUL byte on the wire."""
    sock, address = abstract_socket
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address})
    assert notifier.ready()
    assert ["READY=1"] == received(sock)
    notifier.close()


def test_status_is_one_line_sent_once_per_change(path_socket: tuple[socket.socket, str]) -> None:
    """A repeated STATUS is not sent again; newlines and long text never reach systemd."""
    sock, address = path_socket
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address})
    assert notifier.status("a\nb")
    assert not notifier.status("a   b")  # the same line
    assert notifier.status("x" * 1000)
    assert ["STATUS=a b"] == received(sock)
    (long,) = received(sock)
    assert MAX_STATUS_CHARS == len(long.removeprefix("STATUS="))
    assert "x" * 10 + "\n" not in one_line("x" * 10 + "\n")
    notifier.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    """Not under systemd: nothing is sent, nothing fails, there is no watchdog."""
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    assert not notifier.ready("x") and not notifier.watchdog() and not notifier.stopping()


def test_a_send_that_fails_never_raises(tmp_path: Path) -> None:
    """systemd gone (no socket at the path): the caller gets False, never an exception."""
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    notifier.close()


def test_unusable_addresses_disable_the_notifier() -> None:
    """Only a path or ``@name`` is a socket systemd names; anything else is ignored."""
    for value in ("", "@", "relative/notify", "vsock:2:1234"):
        assert not Notifier.from_environment({"NOTIFY_SOCKET": value}).enabled, value


def test_watchdog_interval_follows_watchdog_usec_and_pid(path_socket: tuple[socket.socket, str]) -> None:
    """WATCHDOG_USEC is the interval; WATCHDOG_PID naming another process turns it off, except
    in a frozen one-file binary, where systemd's main PID is the bootloader above this one."""
    _, address = path_socket
    base = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}
    assert 30.0 == Notifier.from_environment(base).watchdog_interval_s
    assert 30.0 == Notifier.from_environment({**base, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s
    other = {**base, "WATCHDOG_PID": "1"}
    assert Notifier.from_environment(other, frozen=False).watchdog_interval_s is None
    assert 30.0 == Notifier.from_environment(other, frozen=True).watchdog_interval_s
    assert Notifier.from_environment({**base, "WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
    assert Notifier.from_environment({**base, "WATCHDOG_USEC": "0"}).watchdog_interval_s is None


async def test_watchdog_pings_only_while_healthy(path_socket: tuple[socket.socket, str]) -> None:
    """A wedged service (its health predicate false) stops pinging; pings resume with health."""
    sock, address = path_socket
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
    state = {"healthy": True, "asked": 0}

    def healthy() -> bool:
        state["asked"] += 1
        return bool(state["healthy"])

    pinger = asyncio.create_task(keep_watchdog(notifier, healthy))
    try:
        await wait_until_async(lambda: len(pending(sock)) >= 1, 5, "a first ping")
        state["healthy"] = False
        pending(sock)  # a ping sent before the flip may be waiting
        asked = state["asked"]
        await wait_until_async(lambda: state["asked"] >= asked + 3, 5, "three health checks while wedged")
        assert [] == pending(sock), "no ping while unhealthy"
        state["healthy"] = True
        await wait_until_async(lambda: "WATCHDOG=1" in pending(sock), 5, "a ping once healthy again")
    finally:
        pinger.cancel()
        notifier.close()


async def test_a_broken_health_check_counts_as_unhealthy(path_socket: tuple[socket.socket, str]) -> None:
    """A predicate that raises stops the pings instead of killing the pinger."""
    sock, address = path_socket
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise RuntimeError("bug")

    pinger = asyncio.create_task(keep_watchdog(notifier, broken))
    try:
        await wait_until_async(lambda: len(calls) >= 3, 5, "three health checks")
        assert not pinger.done()
        assert [] == pending(sock)
    finally:
        pinger.cancel()
        notifier.close()


async def test_no_watchdog_means_no_pinger() -> None:
    """Without WATCHDOG_USEC the helper returns at once (nothing to keep alive)."""
    await asyncio.wait_for(keep_watchdog(Notifier(None), lambda: True), 1)


async def test_drain_on_stop_runs_the_stop_on_the_loop_from_another_thread() -> None:
    """The Windows service's stop arrives on the dispatcher's thread; the stop runs on the loop,
    and a stop requested before the service exists is kept for it."""
    loop_thread = []
    stopped = asyncio.Event()

    def stop() -> None:
        loop_thread.append(asyncio.get_running_loop())
        stopped.set()

    drain = DrainOnStop()
    drain.attach(stop)
    await asyncio.to_thread(drain.request_stop)
    await asyncio.wait_for(stopped.wait(), 5)
    assert [asyncio.get_running_loop()] == loop_thread

    early = DrainOnStop()
    early.request_stop()  # before attach: the service was still starting
    stopped.clear()
    early.attach(stop)
    assert stopped.is_set()
