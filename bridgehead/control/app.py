"""Assembling the control plane's HTTP server: routes, error answers and the lifespan that
starts and stops the parts (``plane.ControlPlane`` makes them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bridgehead.control import recovery
from bridgehead.control.errors import ApiError
from bridgehead.control.http.responses import error_body, error_response
from bridgehead.control.http.routes import routes
from bridgehead.control.plane import ControlPlane, open_store
from bridgehead.control.services.errors import ServiceError

__all__ = ["ControlPlane", "build_app", "open_store", "watch_revocations"]

log = logging.getLogger("bridgehead.control")

REVOCATION_POLL_S = 1.0


async def watch_revocations(control: ControlPlane) -> None:
    """Disconnect agents revoked by the CLI (another process, writing the store directly)
    within a second; the API's DELETE disconnects at once."""
    since = time.time() - 1.0
    while True:
        await asyncio.sleep(REVOCATION_POLL_S)
        now = time.time()
        try:
            names = await control.store.revoked_agents(since - REVOCATION_POLL_S)
        except Exception:  # noqa: BLE001 - a busy database costs one poll, not the watcher
            log.exception("reading revoked agents failed")
            continue
        since = now
        for name in names:
            control.dispatcher.disconnect(name, "the agent's identity was revoked")


async def _expected(request: Request, exc: Exception) -> Response:
    """The HTTP layer's own errors and the services' errors, with the status of their kind."""
    if not isinstance(exc, ApiError | ServiceError):  # registered for these only
        return await _unexpected(request, exc)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        return await _unexpected(request, exc)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_body(code, str(exc.detail), exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Anything else is a bug: logged with its traceback, answered as a 500 with no detail."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_body("internal", "internal error (logged)", 500)


def build_app(control: ControlPlane) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await control.dispatcher.start()
        except Exception as exc:
            # The database went away between opening the store and here: wait for it and
            # start again, as after a failed write (recovery.py), rather than exit.
            if recovery.unreachable(exc):
                control.dispatcher.fail_stop(exc)
            raise
        await control.scheduler.start()  # after the dispatcher: its first pass runs missed runs
        await control.sinks.start()
        await control.courier.start()
        revocations = asyncio.create_task(watch_revocations(control), name="revocations")
        try:
            yield
        finally:
            revocations.cancel()
            await control.courier.stop()
            await control.sinks.stop()
            await control.scheduler.stop()
            await control.dispatcher.stop()
            control.schemas.close()
            await control.store.close()

    app = Starlette(
        routes=routes(control),
        lifespan=lifespan,
        exception_handlers={
            ApiError: _expected,
            ServiceError: _expected,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.control = control
    return app
