"""The OpenAPI 3.1 description of the job API, served at ``/api/v1/openapi.json``.

Request schemas come from the same msgspec structs that validate the requests
(``services.requests``, ``schedules.models``), so the description cannot drift from what the
server accepts; answers are described by ``services.shapes``.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from bridgehead import __version__
from bridgehead.control.schedules.models import Schedule, ScheduleCreate, SchedulePatch
from bridgehead.control.services.releases import ClusterRelease, Release, ReleaseList, WantedRelease
from bridgehead.control.services.requests import ApiTokenRequest, EnrollmentTokenRequest, EnrollRequest, JobSubmit
from bridgehead.control.services.shapes import (
    Agent,
    ApiToken,
    AuditPage,
    ErrorResponse,
    Job,
    NewApiToken,
    Node,
    RecordsPage,
)
from bridgehead.control.sinks.preflight import CheckRequest, Report


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "401": _json(_ref("ErrorResponse"), "No or unknown bearer token"),
    "403": _json(_ref("ErrorResponse"), "The token's role may not do this"),
    "404": _json(_ref("ErrorResponse"), "No such job"),
    "422": _json(_ref("ErrorResponse"), "The request does not fit the contract; the message says where"),
}
_WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "schema": {"type": "number", "minimum": 0},
    "description": "Hold the answer until the job ends or this many seconds pass",
}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE_BY_NAME = [
    {"name": "after", "in": "query", "schema": {"type": "string"}, "description": "the last name of the page before"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
]
_SCHEDULE_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_CLUSTER = {"name": "cluster", "in": "path", "required": True, "schema": {"type": "string"}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [JobSubmit, EnrollRequest, EnrollmentTokenRequest, Job, RecordsPage, Agent, Node, ErrorResponse]
        + [ApiTokenRequest, ApiToken, NewApiToken, AuditPage]
        + [ScheduleCreate, SchedulePatch, Schedule]
        + [CheckRequest, Report]
        + [Release, ReleaseList, WantedRelease, ClusterRelease],
        ref_template="#/components/schemas/{name}",
    )
    paths: dict[str, Any] = {
        "/api/v1/jobs": {
            "post": {
                "summary": "Submit a job",
                "parameters": [_WAIT],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("JobSubmit")}}},
                "responses": {
                    "201": _json(_ref("Job"), "Created"),
                    "200": _json(_ref("Job"), "An earlier job with the same idempotency_key"),
                    "409": _json(_ref("ErrorResponse"), "idempotency_key reused with other content"),
                    **_ERRORS,
                },
            },
            "get": {
                "summary": "List jobs, newest first",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string"}},
                    {"name": "cluster", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 1000}},
                    {"name": "before", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "jobs": {"type": "array", "items": _ref("Job")},
                                "next": {"type": ["string", "null"], "description": "pass as before= for more"},
                            },
                        },
                        "Jobs (at most limit, and at most server.max_page_bytes of params)",
                    ),
                    **_ERRORS,
                },
            },
        },
        "/api/v1/jobs/{job_id}": {
            "get": {
                "summary": "A job's state",
                "parameters": [_JOB_ID, _WAIT],
                "responses": {"200": _json(_ref("Job"), "The job"), **_ERRORS},
            }
        },
        "/api/v1/jobs/{job_id}/records": {
            "get": {
                "summary": "The records of the job's final attempt, in order, each once",
                "parameters": [
                    _JOB_ID,
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                ],
                "responses": {
                    "200": _json(_ref("RecordsPage"), "A page; pass `next` as `after` until it is null"),
                    "409": _json(_ref("ErrorResponse"), "The job has not ended yet"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a queued or running job",
                "parameters": [_JOB_ID],
                "responses": {
                    "200": _json(_ref("Job"), "Cancelled, or cancel requested from its agent"),
                    "409": _json(_ref("ErrorResponse"), "The job has ended"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/jobs/{job_id}/sync/errors": {
            "get": {
                "summary": "Records the ServiceNow instance rejected, with its message",
                "parameters": [
                    _JOB_ID,
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                ],
                "responses": {
                    "200": _json({"type": "object"}, '{"errors": [...], "next": seq or null}'),
                    "404": _json(_ref("ErrorResponse"), "No such job, or it has no sink"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/jobs/{job_id}/sync/retry": {
            "post": {
                "summary": "Resume a failed delivery from its cursor (operator)",
                "parameters": [_JOB_ID],
                "responses": {
                    "202": _json(_ref("Job"), "Delivery resumes"),
                    "409": _json(_ref("ErrorResponse"), "The delivery has not failed"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/agents": {
            "get": {
                "summary": "Enrolled agents, by name (a page of limit; more with after=<last name>)",
                "parameters": _PAGE_BY_NAME,
                "responses": {"200": _json({"type": "array", "items": _ref("Agent")}, "Agents"), **_ERRORS},
            }
        },
        "/api/v1/nodes": {
            "get": {
                "summary": "The control-plane nodes sharing the store: alive, agents connected, attempts held",
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"nodes": {"type": "array", "items": _ref("Node")}}},
                        "Nodes, by id (on SQLite: this one)",
                    ),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/agents/{name}": {
            "delete": {
                "summary": "Revoke an agent (admin): disconnected at once and refused from then on",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object"}, "Revoked"), **_ERRORS},
            }
        },
        "/api/v1/ca": {
            "get": {
                "summary": "The certificate agents and API clients trust this server with (PEM; what tokens pin)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "PEM",
                        "content": {"application/x-pem-file": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/api/v1/syncs": {
            "get": {
                "summary": "Named syncs and the state their next run starts from (watermark, identities kept)",
                "parameters": _PAGE_BY_NAME,
                "responses": {"200": _json({"type": "array", "items": {"type": "object"}}, "Sync states"), **_ERRORS},
            }
        },
        "/api/v1/syncs/{name}": {
            "delete": {
                "summary": "Forget a sync's state (admin): its next run returns every entry again",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object"}, "Forgotten"), **_ERRORS},
            }
        },
        "/api/v1/enroll": {
            "post": {
                "summary": "Trade a one-time enrolment token for an agent identity (used by bridgehead-agent enroll)",
                "security": [],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("EnrollRequest")}}},
                "responses": {"201": _json({"type": "object"}, "Enrolled"), **_ERRORS},
            }
        },
        "/api/v1/enrollment-tokens": {
            "post": {
                "summary": "Create an enrolment token (admin)",
                "requestBody": {"content": {"application/json": {"schema": _ref("EnrollmentTokenRequest")}}},
                "responses": {"201": _json({"type": "object"}, "The token, shown once"), **_ERRORS},
            }
        },
        "/api/v1/schedules": {
            "post": {
                "summary": "Create a schedule: a job template run on a 5-field cron in a time zone (operator)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ScheduleCreate")}}},
                "responses": {
                    "201": _json(_ref("Schedule"), "Created"),
                    "409": _json(_ref("ErrorResponse"), "The name is taken, or schedules.max_schedules is reached"),
                    **_ERRORS,
                },
            },
            "get": {
                "summary": "List schedules, by name (at most limit, and server.max_page_bytes of job templates)",
                "parameters": _PAGE_BY_NAME,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "schedules": {"type": "array", "items": _ref("Schedule")},
                                "next": {"type": ["string", "null"], "description": "pass as after= for more"},
                            },
                        },
                        "Schedules",
                    ),
                    **_ERRORS,
                },
            },
        },
        "/api/v1/schedules/{name}": {
            "get": {
                "summary": "A schedule, its next run and its last run",
                "parameters": [_SCHEDULE_NAME],
                "responses": {"200": _json(_ref("Schedule"), "The schedule"), **_ERRORS},
            },
            "patch": {
                "summary": "Enable or disable a schedule (operator)",
                "parameters": [_SCHEDULE_NAME],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SchedulePatch")}}},
                "responses": {"200": _json(_ref("Schedule"), "The schedule"), **_ERRORS},
            },
            "delete": {
                "summary": "Delete a schedule (operator); a run already started goes on",
                "parameters": [_SCHEDULE_NAME],
                "responses": {"200": _json({"type": "object"}, "Deleted"), **_ERRORS},
            },
        },
        "/api/v1/schedules/{name}/run": {
            "post": {
                "summary": "Run a schedule now, outside its timetable (operator)",
                "parameters": [_SCHEDULE_NAME],
                "responses": {
                    "201": _json(_ref("Job"), "The run's job"),
                    "409": _json(_ref("ErrorResponse"), "The previous run is still going (runs never overlap)"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/tokens": {
            "get": {
                "summary": "List API tokens (admin): ids, labels, roles, expiry, last use, revocation",
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"tokens": {"type": "array", "items": _ref("ApiToken")}}},
                        "Tokens (never their secrets)",
                    ),
                    **_ERRORS,
                },
            },
            "post": {
                "summary": "Create an API token (admin); the secret is in this answer only",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ApiTokenRequest")}}},
                "responses": {"201": _json(_ref("NewApiToken"), "The token, shown once"), **_ERRORS},
            },
        },
        "/api/v1/tokens/{token_id}": {
            "delete": {
                "summary": "Revoke an API token (admin): refused from the next request on",
                "parameters": [{"name": "token_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("ApiToken"), "Revoked"), **_ERRORS},
            }
        },
        "/api/v1/audit": {
            "get": {
                "summary": "The audit log (admin), oldest first: who changed what, when, from where",
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "actor", "in": "query", "schema": {"type": "string"}},
                    {"name": "action", "in": "query", "schema": {"type": "string"}},
                    {"name": "since", "in": "query", "schema": {"type": "number"}},
                    {"name": "until", "in": "query", "schema": {"type": "number"}},
                ],
                "responses": {
                    "200": _json(_ref("AuditPage"), "Entries; next is the after= of the next page"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/servicenow/{name}/check": {
            "post": {
                "summary": "Preflight of a ServiceNow instance (admin): connect as the sink would, report what to fix",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("CheckRequest")}},
                },
                "responses": {
                    "200": _json(_ref("Report"), "The checks (ok is false if one failed; warnings do not fail)"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/releases": {
            "post": {
                "summary": "Upload an agent release (admin): the binary as the body, signed offline by the release key",
                "parameters": [
                    {
                        "name": "version",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                        "description": "the release's version (letters, digits, '.', '+', '_', '-')",
                    },
                    {
                        "name": "signature",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                        "description": "base64, as 'bridgehead-control release sign' prints it",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": {
                    "201": _json(_ref("Release"), "Kept"),
                    "200": _json(_ref("Release"), "Uploaded before with the same bytes"),
                    "409": _json(
                        _ref("ErrorResponse"),
                        "Self-update is off (no [releases] public_key), or the version exists with other bytes",
                    ),
                    "413": _json(_ref("ErrorResponse"), "Over [releases] max_release_bytes"),
                    **_ERRORS,
                    "422": _json(_ref("ErrorResponse"), "A bad version or signature (bad_signature: nothing kept)"),
                },
            },
            "get": {
                "summary": "Uploaded agent releases, newest first",
                "responses": {"200": _json(_ref("ReleaseList"), "Releases"), **_ERRORS},
            },
        },
        "/api/v1/clusters/{cluster}/release": {
            "get": {
                "summary": "The release a cluster's agents should run, and what each runs and last reported",
                "parameters": [_CLUSTER],
                "responses": {"200": _json(_ref("ClusterRelease"), "The cluster's release"), **_ERRORS},
            },
            "put": {
                "summary": "Set (or with null clear) the release a cluster's agents should run (admin)",
                "parameters": [_CLUSTER],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("WantedRelease")}}},
                "responses": {
                    "200": _json(_ref("ClusterRelease"), "Set; agents move one at a time"),
                    **_ERRORS,
                    "404": _json(_ref("ErrorResponse"), "No release of that version was uploaded"),
                },
            },
        },
        "/api/v1/whoami": {
            "get": {
                "summary": "The calling token's role, id and label",
                "responses": {"200": _json({"type": "object"}, "Who you are"), **_ERRORS},
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (a viewer token, unless server.metrics_public)",
                "responses": {"200": {"description": "text exposition format"}, "401": _ERRORS["401"]},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bridgehead control plane", "version": __version__},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
