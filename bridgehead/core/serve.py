"""Running an HTTP server of this project (the control plane, the sandbox): one uvicorn set-up
for all of them, so that they start, listen and stop alike.

    sock = bind(host, port)          # before uvicorn: a port in use is a one-line config error
    server = HttpServer(app, graceful_shutdown_s=10, ...)   # SIGTERM stops it from here on
    log.info("serving on %s", sock.getsockname())
    server.run([sock])               # returns once stopped

What every server gets here:
- uvloop where it runs (not on Windows; ``bridgehead.core.eventloop``), asyncio's own loop
  elsewhere; httptools for HTTP/1.1;
- lifespan on (the app opens and closes its store there), no access log (each app logs what
  matters itself), no X-Forwarded-* rewriting (nothing is served behind a trusted proxy);
- SIGTERM and Ctrl-C stop it gracefully: it stops accepting, requests in flight get
  ``graceful_shutdown_s`` to finish, the lifespan shutdown runs. uvicorn installs its handlers
  with ``signal.signal`` (never ``loop.add_signal_handler``, which Windows lacks), and after a
  graceful stop raises the signal again under the handler that was there before it: the one
  installed here makes that a no-op for SIGTERM, so the process exits 0 rather than dying by
  the signal; Ctrl-C then ends the command as an interrupt (exit 130, ``core.commands``).
- under systemd (``notifier``, ``core.sdnotify``): READY=1 once listening, STATUS from
  ``status()`` (refreshed every 5 s), WATCHDOG=1 while healthy, STOPPING=1 when the graceful
  stop begins. Healthy: uvicorn's main loop ticked (every 0.1 s) within the last 5 s, on the
  event loop that serves every request; a loop blocked or the server's loop gone stops the
  pings, and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from bridgehead.core.errors import ConfigError
from bridgehead.core.eventloop import loop_factory
from bridgehead.core.sdnotify import Notifier, keep_watchdog

TICK_STALE_S = 5.0  # uvicorn's main loop ticks every 0.1 s; 5 s without one is a wedge
STATUS_EVERY_TICKS = 50  # 5 s


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before uvicorn starts (port 0 picks a free port, which
    ``getsockname()`` then reports)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError("--listen", "", f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """A uvicorn server for ``app``, stopped gracefully by SIGTERM or Ctrl-C from the moment it
    is made: log where it listens after making it, so that a SIGTERM sent on seeing that line
    is a graceful stop and not death by the signal."""

    def __init__(
        self,
        app: Any,  # an ASGI application (Starlette's); uvicorn types it loosely too
        *,
        graceful_shutdown_s: int,
        http: type[asyncio.Protocol] | Literal["httptools"] = "httptools",
        ws: type[asyncio.Protocol] | Literal["none"] = "none",
        ws_max_size: int = 16 * 1024 * 1024,
        ws_ping_interval: float | None = None,
        limit_concurrency: int | None = None,
        server_header: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        notifier: Notifier | None = None,
        status: Callable[[], str] | None = None,
    ) -> None:
        import uvicorn  # noqa: PLC0415 - a command that fails its configuration check never loads it

        notify = notifier or Notifier(None)
        state = status or (lambda: "serving")

        class Server(uvicorn.Server):
            interrupted = False  # stopped by Ctrl-C (SIGINT)
            ticked_at = time.monotonic()
            watchdog: asyncio.Task[None] | None = None

            def handle_exit(self, sig: int, frame: Any) -> None:
                self.interrupted = self.interrupted or sig == signal.SIGINT
                super().handle_exit(sig, frame)

            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if self.started:  # the lifespan ran and the sockets accept connections
                    self.ticked_at = time.monotonic()
                    notify.ready(state())
                    self.watchdog = asyncio.create_task(keep_watchdog(notify, self.healthy), name="watchdog")

            def healthy(self) -> bool:
                return not self.should_exit and time.monotonic() - self.ticked_at <= TICK_STALE_S

            async def on_tick(self, counter: int) -> bool:
                self.ticked_at = time.monotonic()
                if counter % STATUS_EVERY_TICKS == 0:
                    notify.status(state())
                return bool(await super().on_tick(counter))

            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                notify.stopping("stopping: closing connections, finishing requests")
                if self.watchdog is not None:
                    self.watchdog.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self.watchdog
                await super().shutdown(sockets=sockets)

        self._server = Server(
            uvicorn.Config(
                app,
                loop="uvloop" if loop_factory() is not None else "asyncio",
                http=http,
                ws=ws,
                ws_max_size=ws_max_size,
                ws_ping_interval=ws_ping_interval,
                lifespan="on",
                limit_concurrency=limit_concurrency,
                proxy_headers=False,
                server_header=server_header,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=graceful_shutdown_s,
                ssl_context_factory=None if ssl_context is None else _given(ssl_context),
            )
        )
        # Until run() hands over to uvicorn's handler, and again after uvicorn re-raises it.
        signal.signal(signal.SIGTERM, lambda signum, frame: self.stop())

    def stop(self) -> None:
        """Stop gracefully, as SIGTERM does (before run() too: it then returns at once)."""
        self._server.should_exit = True

    def run(self, sockets: Sequence[socket.socket]) -> None:
        """Serve on ``sockets`` (already listening, see ``bind``) until stopped; after Ctrl-C,
        raise ``KeyboardInterrupt``. uvicorn re-raises the signal itself, but under asyncio's
        runner that only cancels the main task, which may end first and return normally: so
        the interrupt is raised here whatever became of it."""
        self._server.run(sockets=list(sockets))
        if getattr(self._server, "interrupted", False):
            raise KeyboardInterrupt


def _given(context: ssl.SSLContext) -> Callable[[Any, Any], ssl.SSLContext]:
    """uvicorn builds a context from certificate files; the control plane's is made in memory
    and already set up (client certificates, ciphers), so it is handed over as it is."""
    return lambda _config, _default: context
