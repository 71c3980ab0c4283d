"""The Import Set API, ``/api/now[/v1|/v2]/import/{staging_table}`` (SERVICENOW_API.md §3).

POST .../{staging}                  one row keyed by column names, transformed at once;
                                    201 with per-map results
POST .../{staging}/insertMultiple   {"records": [...]}, keyed by column labels (or names, per the
                                    table's sys_rest_insert_multiple record or
                                    ``instance.insert_multiple_columns``); then per the record's
                                    transformation, else ``instance.insert_multiple``:
                                    "async" -> 201 {"import_set_id", "multi_import_set_id"},
                                               transformed afterwards in the background
                                    "sync"  -> 201, the single-row shape, one entry per row
                                    "unsupported" -> 400 unknown URI, as an older instance
                                    ?multi_import_set_id=  adds the import set to that one
                                    ?run_after=            accepted; import sets run in order anyway
GET  .../{staging}/{sys_id}         a staging row's result, read back
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from bridgehead_sandbox.config import TABLE_NAME
from bridgehead_sandbox.errors import bad_body, bad_request, invalid_table, no_record, unknown_uri
from bridgehead_sandbox.imports import MULTI_TABLE, ImportSet
from bridgehead_sandbox.records import is_sys_id, to_value
from bridgehead_sandbox.responses import json_response, read_json
from bridgehead_sandbox.table_api import principal_name

if TYPE_CHECKING:
    from bridgehead_sandbox.app import Sandbox


def _staging(request: Request) -> str:
    name = str(request.path_params["table"])
    if not TABLE_NAME.match(name):
        raise invalid_table(name)
    return name


def _sync_body(result: ImportSet) -> dict[str, Any]:
    return {"import_set": result.number, "staging_table": result.staging_table, "result": result.results}


def _strings(row: dict[str, Any]) -> dict[str, str]:
    return {str(k): to_value(v) for k, v in row.items()}


class ImportApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def _json(self, request: Request) -> Any:
        limits = self.sandbox.config.limits
        return await read_json(request, limits.max_body_bytes, limits.oversize_status)

    async def insert(self, request: Request) -> Response:
        staging = _staging(request)
        body = await self._json(request)
        if not isinstance(body, dict):
            raise bad_body("The payload must be a JSON object of staging column names and values.")
        importer = self.sandbox.importer
        rows = importer.source_rows(staging, [_strings(body)], "name")
        result = await importer.load(staging, rows, principal_name(request), str(request.base_url), multi=False)
        return json_response(_sync_body(result), 201)

    async def insert_multiple(self, request: Request) -> Response:
        if self.sandbox.config.instance.insert_multiple == "unsupported":
            raise unknown_uri()
        staging = _staging(request)
        body = await self._json(request)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise bad_body('The payload must be {"records": [...]}, a list of JSON objects.')
        limit = self.sandbox.config.limits.max_insert_multiple
        if len(records) > limit:
            raise bad_request(
                "Too many records",
                f"{len(records)} records in one request; at most {limit} (limits.max_insert_multiple)",
            )
        importer = self.sandbox.importer
        setup = importer.setup(staging)
        rows = importer.source_rows(staging, [_strings(r) for r in records], setup.columns)
        multi_sys_id = self._multi_import_set(request)
        user = principal_name(request)
        if setup.mode == "sync":
            result = await importer.load(
                staging, rows, user, str(request.base_url), multi=True, multi_sys_id=multi_sys_id
            )
            return json_response(_sync_body(result), 201)
        staged = importer.stage(staging, rows, user, mode="async", multi=True, multi_sys_id=multi_sys_id)
        importer.submit(staged.sys_id)
        return json_response({"import_set_id": staged.sys_id, "multi_import_set_id": staged.multi_sys_id}, 201)

    def _multi_import_set(self, request: Request) -> str:
        wanted = request.query_params.get("multi_import_set_id", "")
        if not wanted:
            return ""
        table = self.sandbox.store.table(MULTI_TABLE)
        if not is_sys_id(wanted) or table is None or table.get(wanted) is None:
            raise bad_request("Invalid multi_import_set_id", f"no sys_multi_import_set record {wanted!r}")
        return wanted

    async def get_row(self, request: Request) -> Response:
        staging = _staging(request)
        result = self.sandbox.importer.row_result(staging, request.path_params["sys_id"], str(request.base_url))
        if result is None:
            raise no_record()
        return json_response(_sync_body(result))
