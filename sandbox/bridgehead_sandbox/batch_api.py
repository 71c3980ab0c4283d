"""The Batch API, ``POST /api/now/v1/batch``: many REST calls in one request.

As ServiceNow documents it (REST API reference, "Batch API", ServiceNowDocs
``api-reference/rest-apis/batch-api.md``)::

    {"batch_request_id": "1",
     "rest_requests": [{"id": "11", "method": "GET", "url": "/api/now/table/incident?sysparm_limit=1",
                        "headers": [{"name": "Accept", "value": "application/json"}],
                        "body": "<base64>", "exclude_response_headers": false}]}
    -> 200 {"batch_request_id": "1",
            "serviced_requests": [{"id": "11", "status_code": 200, "status_text": "OK",
                                   "body": "<base64>", "headers": [{"name", "value"}],
                                   "execution_time": 5}],
            "unserviced_requests": []}

Each item runs as its own request through the sandbox's routes, as the batch's user (the
batch was authenticated and rate-limited once, as one request), in order. An item that
would start after ``limits.batch_timeout_s`` (the "REST Batch API request timeout" quota
rule, 30 s) is not run: its id goes to ``unserviced_requests``, and a client sends it again.
Items only reach ``/api/`` routes, never a batch again nor ``/sandbox/``. The unversioned
``/api/now/batch`` is served too, though instances have been seen to answer it 400 (a
ServiceNow Community report): clients such as PySNC use ``v1``.
"""

from __future__ import annotations

import base64
import binascii
import http
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Scope

from bridgehead_sandbox.errors import SnError, bad_body, unknown_uri
from bridgehead_sandbox.responses import error_response, json_response, read_json

if TYPE_CHECKING:
    from bridgehead_sandbox.app import Sandbox

MAX_ITEM_BODY_BYTES = 5 * 1024 * 1024  # glide.rest.batch.max.inputSize default
MAX_ITEM_URL_BYTES = 64 * 1024  # an item's URL travels in the body, past the request-line limit


class BatchItem:
    """One validated ``rest_requests`` entry."""

    def __init__(self, raw: object, index: int) -> None:
        where = f"rest_requests[{index}]"
        if not isinstance(raw, dict):
            raise bad_body(f"{where} must be an object with id, method and url")
        for key in ("id", "method", "url"):
            if not isinstance(raw.get(key), str | int) or raw.get(key) in ("", None):
                raise bad_body(f"{where}.{key} is required (a string)")
        self.id = str(raw["id"])
        self.method = str(raw["method"]).upper()
        self.url = str(raw["url"])
        if len(self.url.encode()) > MAX_ITEM_URL_BYTES:
            raise bad_body(f"{where}.url is longer than {MAX_ITEM_URL_BYTES} bytes")
        self.exclude_headers = raw.get("exclude_response_headers") is True
        self.headers: list[tuple[bytes, bytes]] = []
        headers = raw.get("headers") or []
        if not isinstance(headers, list):
            raise bad_body(f"{where}.headers must be a list of {{name, value}} objects")
        for header in headers:
            if not isinstance(header, dict) or not isinstance(header.get("name"), str):
                raise bad_body(f"{where}.headers must be a list of {{name, value}} objects")
            name = header["name"].lower()
            if name in ("content-length", "host", "transfer-encoding"):
                continue  # recomputed for the item
            self.headers.append((name.encode("latin-1"), str(header.get("value", "")).encode("latin-1")))
        body = raw.get("body") or ""
        if not isinstance(body, str):
            raise bad_body(f"{where}.body must be a base64 string")
        try:
            self.body = base64.b64decode(body.replace("\n", "").replace(" ", ""), validate=True)
        except (binascii.Error, ValueError):
            raise bad_body(f"{where}.body is not valid base64") from None
        if len(self.body) > MAX_ITEM_BODY_BYTES:
            raise bad_body(f"{where}.body is larger than {MAX_ITEM_BODY_BYTES} bytes (glide.rest.batch.max.inputSize)")


class BatchApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def batch(self, request: Request) -> Response:
        limits = self.sandbox.config.limits
        body = await read_json(request, limits.max_body_bytes, limits.oversize_status)
        if not isinstance(body, dict) or not isinstance(body.get("rest_requests"), list):
            raise bad_body("The payload must be a JSON object with a rest_requests list.")
        raw_items: list[Any] = body["rest_requests"]
        if len(raw_items) > limits.max_batch_requests:
            raise bad_body(f"at most {limits.max_batch_requests} rest_requests per batch (limits.max_batch_requests)")
        items = [BatchItem(raw, i) for i, raw in enumerate(raw_items)]
        batch_id = body.get("batch_request_id", "")
        started = time.monotonic()
        serviced: list[dict[str, Any]] = []
        unserviced: list[str] = []
        for item in items:
            # One item always runs, so a client that resends the unserviced ones makes progress.
            if serviced and time.monotonic() - started > limits.batch_timeout_s:
                unserviced.append(item.id)
                continue
            serviced.append(await self._run(request, item))
        return json_response(
            {
                "batch_request_id": "" if batch_id is None else str(batch_id),
                "serviced_requests": serviced,
                "unserviced_requests": unserviced,
            }
        )

    async def _run(self, outer: Request, item: BatchItem) -> dict[str, Any]:
        began = time.monotonic()
        status, headers, body = await self._call(outer, item)
        answer: dict[str, Any] = {
            "id": item.id,
            "body": base64.b64encode(body).decode(),
            "status_code": status,
            "status_text": _status_text(status),
            "headers": [] if item.exclude_headers else [{"name": k, "value": v} for k, v in headers],
            "execution_time": round((time.monotonic() - began) * 1000),
        }
        if status >= 400:
            answer["error_message"] = _status_text(status)
        return answer

    async def _call(self, outer: Request, item: BatchItem) -> tuple[int, list[tuple[str, str]], bytes]:
        parts = urllib.parse.urlsplit(item.url)
        path = parts.path
        if parts.scheme or parts.netloc or not path.startswith("/api/") or _is_batch(path):
            return await _render(error_response(unknown_uri()))
        scope: Scope = {
            **outer.scope,
            "method": item.method,
            "path": urllib.parse.unquote(path),
            "raw_path": path.encode(),
            "query_string": parts.query.encode(),
            "headers": [*item.headers, (b"content-length", str(len(item.body)).encode())],
            "path_params": {},
        }
        scope.pop("router", None)
        scope.pop("endpoint", None)
        scope.pop("route", None)
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": item.body, "more_body": False}

        status = 500
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in message["headers"]]
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        try:
            await outer.app(scope, receive, send)
        except SnError as exc:
            if not headers and not chunks:
                return await _render(error_response(exc))
        except Exception:  # noqa: BLE001 - Starlette answered 500 and re-raised; the item says 500
            if not headers and not chunks:
                return await _render(error_response(SnError(500, "Internal error", "logged by the sandbox")))
        return status, headers, b"".join(chunks)


def _is_batch(path: str) -> bool:
    return path.rstrip("/").endswith("/batch") and path.startswith("/api/now/")


async def _render(response: Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in response.raw_headers]
    return response.status_code, headers, bytes(response.body)


def _status_text(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""
