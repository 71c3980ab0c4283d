"""``/api/v1/releases`` and ``/api/v1/clusters/{cluster}/release``: agent releases and the
version each cluster should run (docs/packaging.md). Viewers read; admins upload and set, each
change in the audit log (``bridgehead.control.services.releases`` does the work).

An upload is the binary itself as the body (``application/octet-stream``), streamed to disk
under ``[releases] max_release_bytes`` (never ``server.max_request_bytes``: releases are tens of
MB), with its version and signature in the query.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from bridgehead.control.config import ControlConfig
from bridgehead.control.errors import ApiError, BadRequest
from bridgehead.control.http.access import Access
from bridgehead.control.http.body import DISCARD_LIMIT, _discard, read_body
from bridgehead.control.http.responses import json_response
from bridgehead.control.services.errors import LimitExceeded, ServiceError
from bridgehead.control.services.releases import ReleaseService, WantedRelease


class _Body:
    """The request's body as chunks, knowing whether it was read to its end."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.read_to_end = False

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.request.stream():
            yield chunk
        self.read_to_end = True

    async def drop_rest(self) -> None:
        """Read (and drop) some of what is left, so the client gets the answer, not a reset."""
        if self.read_to_end:
            return
        # Starlette's "Stream consumed": its last part had arrived with the one that passed the limit.
        with contextlib.suppress(RuntimeError):
            await _discard(self.request, DISCARD_LIMIT)


class ReleaseRoutes:
    def __init__(self, config: ControlConfig, access: Access, releases: ReleaseService) -> None:
        self.config = config
        self.access = access
        self.releases = releases

    async def upload(self, request: Request) -> Response:
        """201 with the release; 200 if it was uploaded before with the same bytes."""
        actor = await self.access.authorize(request, "admin")
        query = request.query_params
        version, signature = query.get("version"), query.get("signature")
        if signature:
            # A base64 '+' sent unencoded in a query reads as a space; base64 has no spaces.
            signature = signature.replace(" ", "+")
        if not version or not signature:
            await _Body(request).drop_rest()
            raise BadRequest(
                "send ?version=V&signature=SIG (the signature 'bridgehead-control release sign' printed) "
                "and the binary as the body",
                code="invalid_request",
            )
        limit = self.config.releases.max_release_bytes
        length = request.headers.get("content-length", "")
        body = _Body(request)
        try:
            if length.isdigit() and int(length) > limit:
                raise LimitExceeded(
                    f"the release of {length} bytes is over the {limit}-byte limit ([releases] max_release_bytes)",
                    code="too_large",
                )
            release, created = await self.releases.upload(version, signature, body.chunks(), actor)
        except LimitExceeded as exc:
            await body.drop_rest()
            raise ApiError(exc.message, code="too_large", status=413) from None
        except ServiceError:  # refused before the body was read (no key, a bad version): answered all the same
            await body.drop_rest()
            raise
        except ClientDisconnect:
            raise BadRequest("the upload was cut off before its end; nothing was kept", code="incomplete") from None
        return json_response(release, 201 if created else 200)

    async def list(self, request: Request) -> Response:
        await self.access.authorize(request, "viewer")
        return json_response(await self.releases.list())

    async def get_cluster(self, request: Request) -> Response:
        await self.access.authorize(request, "viewer")
        return json_response(await self.releases.cluster(request.path_params["cluster"]))

    async def set_cluster(self, request: Request) -> Response:
        """Set (or, with null, clear) the version the cluster's agents should run."""
        actor = await self.access.authorize(request, "admin")
        body = await read_body(request, WantedRelease, self.config.server.max_request_bytes)
        return json_response(await self.releases.set_wanted(request.path_params["cluster"], body.version, actor))
