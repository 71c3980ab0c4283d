"""A TCP proxy that holds every byte for a fixed time each way: a network link's latency on
loopback (this machine's kernel has no netem). Run as a process of its own, so it takes
nothing from the interpreter of whatever it measures:

    python bench/_delay_proxy.py --target HOST:PORT --one-way-ms MS

It prints ``PORT`` (where it listens, on 127.0.0.1) once ready, then serves until killed.
Bytes keep their order and are held ``MS`` from the moment they were read. Threads that
sleep, not an event loop: an event loop's timers round up to the millisecond (epoll),
``time.sleep`` is good to a few tens of microseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import socket
import threading
import time


def _pump(src: socket.socket, dst: socket.socket, delay_s: float) -> None:
    held: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def release() -> None:
        while True:
            due, data = held.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with contextlib.suppress(OSError):
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)

    threading.Thread(target=release, daemon=True).start()
    with contextlib.suppress(OSError):
        while data := src.recv(256 * 1024):
            held.put((time.monotonic() + delay_s, data))
    held.put((time.monotonic() + delay_s, b""))


def _connection(client: socket.socket, target: tuple[str, int], delay_s: float) -> None:
    try:
        server = socket.create_connection(target)
    except OSError:
        client.close()
        return
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=_pump, args=(client, server, delay_s), daemon=True).start()
    threading.Thread(target=_pump, args=(server, client, delay_s), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--one-way-ms", type=float, required=True)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            client, _ = listener.accept()
            _connection(client, (host, int(port)), args.one_way_ms / 1000)


if __name__ == "__main__":
    main()
