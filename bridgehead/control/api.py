"""The job API (``/api/v1``): JSON over HTTP, bearer tokens with roles.

Bodies are decoded and validated by msgspec in one pass; every fault is a 4xx with
``{"error": {"code", "message"}}`` naming what is wrong. Records are served as the raw
JSON the agent sent, spliced into the page without being parsed again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from bridgehead.control.auth import (
    API_TOKEN_PREFIX,
    ENROLLMENT_TOKEN_PREFIX,
    ROLES,
    new_enrollment_token,
    new_token,
    role_allows,
    token_hash,
)
from bridgehead.control.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from bridgehead.control.pki import PkiError, fingerprint
from bridgehead.control.sinks.spec import parse_sink
from bridgehead.control.store.base import (
    TERMINAL_STATES,
    Actor,
    AgentRow,
    ApiTokenRow,
    EnrollmentGrant,
    EnrollmentRefused,
    JobRow,
    json_size,
)

if TYPE_CHECKING:
    from bridgehead.control.app import ControlPlane

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]


class JobSubmit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/jobs``."""

    plugin: Name
    params: dict[str, Any]
    cluster: Name = "default"
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    sink: dict[str, Any] | None = None


class EnrollRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/enroll`` (authenticated by the one-time token in the body): the token's
    secret part, and a CSR (PEM) for the key the agent made; the names come from here."""

    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    agent: Name
    cluster: Name
    csr: Annotated[str, msgspec.Meta(min_length=1, max_length=16384)]


class ApiTokenRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/tokens``: the token is in the answer, once."""

    role: Annotated[str, msgspec.Meta(pattern="^(viewer|operator|admin)$")]
    name: Annotated[str, msgspec.Meta(max_length=128)] = ""
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86_400)] | None = None


class EnrollmentTokenRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    cluster: Name = "default"
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86_400)] = 86_400.0
    uses: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1
    replace: Name | None = None


_encoder = msgspec.json.Encoder()
# How long a token's role is remembered without asking the store; a revocation through the API
# clears the memory, one through the CLI (another process) is noticed by the store's
# ``external_changes`` on the next request, and an expiry by the ``expires_at`` kept here.
TOKEN_CACHE_S = 5.0
# A token's ``last_used_at`` is written at most this often (not a write per request).
LAST_USED_EVERY_S = 60.0


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def token_view(token: ApiTokenRow) -> dict[str, Any]:
    return dataclasses.asdict(token)


@dataclasses.dataclass
class _CachedToken:
    actor: Actor
    expires_at: float | None  # the token's own expiry (epoch seconds)
    fresh_until: float  # monotonic
    changes: int  # the store's external_changes() when it was read


# An over-long body is read to the end (and dropped) up to this much, so the client gets
# its 413 instead of a connection reset; beyond it the connection is simply closed.
DISCARD_LIMIT = 16 * 1024 * 1024
# Deeper params or sinks are refused: nothing a plugin takes needs them, and they would
# strain every recursive encoder and decoder on the way to the agent and back.
MAX_JSON_DEPTH = 32


async def _discard(request: Request, limit: int, seconds: float = 3.0) -> None:
    """Read and drop the rest of a refused body (up to ``limit`` bytes and ``seconds``)."""

    async def drain() -> None:
        drained = 0
        async for chunk in request.stream():
            drained += len(chunk)
            if drained > limit:
                return

    try:
        await asyncio.wait_for(drain(), seconds)
    except (TimeoutError, ClientDisconnect):
        pass


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def error_response(exc: ApiError) -> Response:
    return json_response({"error": {"code": exc.code, "message": exc.message}}, exc.status)


def job_view(
    job: JobRow, progress: dict[str, Any] | None = None, outcome: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The API's view of a job; ``outcome`` overrides the fields the job's end changed."""
    if outcome is not None:
        job = _Overlay(job, outcome)  # type: ignore[assignment]
    return {
        "id": job.id,
        "plugin": job.plugin,
        "cluster": job.cluster,
        "state": job.state,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "agent": job.agent,
        "error": {"code": job.error_code, "message": job.error_message or ""} if job.error_code else None,
        "record_count": job.record_count if job.terminal else job.acked_seq,
        "timeout_s": job.timeout_s,
        "idempotency_key": job.idempotency_key,
        "cancel_requested": job.cancel_requested,
        "params": job.params,
        "sink": job.sink,
        "progress": progress,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


class _Overlay:
    """A job row seen through the fields its end changed (cheaper than copying the row)."""

    def __init__(self, job: JobRow, changes: dict[str, Any]) -> None:
        self._job = job
        self._changes = changes

    def __getattr__(self, name: str) -> Any:
        return self._changes[name] if name in self._changes else getattr(self._job, name)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class Api:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.store = control.store
        self.dispatcher = control.dispatcher
        self._token_cache: dict[str, _CachedToken] = {}
        self._last_used: dict[str, float] = {}  # token id -> monotonic time last_used_at was written
        self._plugins_by_cluster: dict[str, tuple[int, dict[str, str]]] = {}

    # --- helpers -------------------------------------------------------------------------

    async def _authorize(self, request: Request, needed: str) -> Actor:
        """The token's holder (for the audit log), if its role allows ``needed``: 401 for no
        token, an unknown, revoked or expired one; 403 for too low a role."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send 'Authorization: Bearer <api token>' (bridgehead-control api-token create)")
        token = token.strip()
        now = time.monotonic()
        wall = time.time()
        # A short cache keeps the hot path off the hash and the token table. Keyed by the token
        # itself: it lives in this process's memory only.
        changes = self.store.external_changes()
        cached = self._token_cache.get(token)
        if (
            cached is None
            or cached.fresh_until <= now
            or cached.changes != changes
            or (cached.expires_at is not None and cached.expires_at <= wall)
        ):
            row = await self.store.api_token(token_hash(token))
            if row is None:
                raise Unauthorized("unknown API token")
            if row.revoked_at is not None:
                raise Unauthorized(f"API token {row.id} was revoked", code="token_revoked")
            if row.expires_at is not None and row.expires_at <= wall:
                raise Unauthorized(f"API token {row.id} has expired", code="token_expired")
            if len(self._token_cache) > 10_000:
                self._token_cache.clear()
            actor = Actor(row.id, row.name, row.role)
            cached = _CachedToken(actor, row.expires_at, now + TOKEN_CACHE_S, changes)
            self._token_cache[token] = cached
        actor = cached.actor
        if self._last_used.get(actor.id, -LAST_USED_EVERY_S) + LAST_USED_EVERY_S <= now:
            if len(self._last_used) > 10_000:
                self._last_used.clear()
            self._last_used[actor.id] = now
            self.store.api_token_used(actor.id, wall)  # joins this turn's commit; nothing waits
        if not role_allows(actor.role, needed):
            raise Forbidden(f"this token's role is {actor.role!r}; this call needs {needed!r} or higher")
        return dataclasses.replace(actor, address=client_address(request))

    async def _body(self, request: Request, kind: type[Any]) -> Any:
        limit = self.control.config.server.max_request_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _discard(request, DISCARD_LIMIT)
            raise ApiError(
                f"request body of {length} bytes is over the {limit}-byte limit", code="too_large", status=413
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                await _discard(request, DISCARD_LIMIT)
                raise ApiError(f"request body over {limit} bytes", code="too_large", status=413)
        if not body:
            raise BadRequest("empty body: send a JSON object", code="invalid_json")
        try:
            decoded = msgspec.json.decode(bytes(body), type=kind)
        except msgspec.ValidationError as exc:
            raise BadRequest(str(exc)) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise BadRequest(f"not valid JSON: {exc}", code="invalid_json") from None
        return decoded

    @staticmethod
    def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise BadRequest(f"query parameter {name}={raw!r} is not a number") from None
        if not low <= value <= high:
            raise BadRequest(f"query parameter {name}={raw!r} must be between {low:g} and {high:g}")
        return value

    async def _job(self, request: Request) -> JobRow:
        job_id = request.path_params["job_id"]
        job = await self.store.get_job(job_id) if len(job_id) <= 64 else None
        if job is None:
            raise NotFound(f"no job {job_id!r}", code="job_not_found")
        return job

    async def _wait_view(self, request: Request, job: JobRow) -> dict[str, Any]:
        wait = self._number(request, "wait", 0.0, 0.0, self.control.config.server.max_wait_s)
        if wait > 0 and not job.terminal:
            outcome = await self.dispatcher.wait(job.id, wait)
            # The outcome carries what the store now says, so the answer needs no read.
            if outcome is not None:
                view = job_view(job, None, outcome)
                if job.sink is not None:
                    view["sync"] = await self._sync_view(job, str(outcome["state"]), int(outcome["record_count"]))
                return view
            job = await self.store.get_job(job.id) or job
        view = job_view(job, self.dispatcher.progress.get(job.id))
        if job.sink is not None:
            view["sync"] = await self._sync_view(job, job.state, job.record_count)
        return view

    async def _sync_view(self, job: JobRow, state: str, record_count: int) -> dict[str, Any]:
        """Where the job's delivery to ServiceNow stands: waiting (the job runs), pending,
        delivering, done, failed (with the reason), or not_delivered (the job did not succeed)."""
        delivery = await self.store.delivery(job.id)
        counts = await self.store.delivery_counts(job.id)
        if delivery is not None:  # queued in the commit that ended the job as succeeded
            sync_state = delivery.state
        else:
            sync_state = "not_delivered" if state in TERMINAL_STATES else "waiting"
        error = None
        if delivery is not None and delivery.error_code:
            error = {"code": delivery.error_code, "message": delivery.error_message or ""}
        return {
            "state": sync_state,
            **counts,
            "total": record_count,
            "error": error,
            "instance": delivery.instance if delivery is not None else None,
            "started_at": delivery.started_at if delivery is not None else None,
            "finished_at": delivery.finished_at if delivery is not None else None,
        }

    def _cluster_plugins(self, cluster: str) -> dict[str, str]:
        """Plugin name -> a live agent of the cluster that offers it (whose published schema
        checks the params). Rebuilt only when the set of live agents changes."""
        cached = self._plugins_by_cluster.get(cluster)
        if cached is not None and cached[0] == self.dispatcher.links_version:
            return cached[1]
        plugins: dict[str, str] = {}
        for link in self.dispatcher.links.values():
            if link.cluster != cluster:
                continue
            for name in link.plugins:
                plugins.setdefault(name, link.name)
        self._plugins_by_cluster[cluster] = (self.dispatcher.links_version, plugins)
        return plugins

    def _check_params(self, submit: JobSubmit) -> None:
        """Validate params against the schema the cluster's live agents publish for the plugin."""
        plugins = self._cluster_plugins(submit.cluster)
        if not plugins:
            return  # no agent of the cluster is connected: queue it; the agent validates on arrival
        if submit.plugin not in plugins:
            raise BadRequest(
                f"no agent of cluster {submit.cluster!r} offers plugin {submit.plugin!r} "
                f"(offered: {', '.join(sorted(plugins))})",
                code="unknown_plugin",
            )
        validator = self.control.schemas.validator(plugins[submit.plugin], submit.plugin)
        if validator is None or validator.is_valid(submit.params):
            return
        errors = list(validator.iter_errors(submit.params))
        if errors:
            # The deepest error names the field most precisely.
            error = max(errors, key=lambda e: len(e.instance_path))
            where = "params" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.instance_path)
            raise BadRequest(f"{where}: {error.message}", code="invalid_params")

    # --- routes --------------------------------------------------------------------------

    def validate_submit(self, submit: JobSubmit) -> None:
        """Everything a submission is checked for before it is stored (``BadRequest`` says
        what is wrong). Schedules check their job template with it when they are created."""
        jobs = self.control.config.jobs
        for name, value in (("params", submit.params), ("sink", submit.sink)):
            if json_depth(value) > MAX_JSON_DEPTH:
                raise BadRequest(f"{name} is nested more than {MAX_JSON_DEPTH} levels deep", code="too_deep")
        if len(msgspec.json.encode(submit.params)) > jobs.max_params_bytes:
            raise BadRequest(f"params over {jobs.max_params_bytes} bytes", code="too_large")
        timeout = submit.timeout_s or jobs.default_timeout_s
        if timeout > jobs.max_timeout_s:
            raise BadRequest(f"timeout_s {timeout:g} is over the maximum of {jobs.max_timeout_s:g}")
        self._check_params(submit)
        if submit.sink is not None:
            self._check_sink(submit.sink)

    def _check_sink(self, sink: dict[str, Any]) -> None:
        try:
            spec = parse_sink(sink)
        except ValueError as exc:
            raise BadRequest(f"sink: {exc}", code="invalid_sink") from None
        instances = self.control.config.servicenow
        if spec.servicenow not in instances:
            known = ", ".join(sorted(instances)) or "none"
            raise BadRequest(
                f"sink: no ServiceNow instance {spec.servicenow!r} in the control plane's configuration "
                f"([servicenow.NAME] tables; configured: {known})",
                code="invalid_sink",
            )
        from bridgehead.control.sinks.allowlist import refusal  # the instance's tables and allow_delete

        problem = refusal(spec.servicenow, instances[spec.servicenow], spec)
        if problem is not None:
            raise BadRequest(f"sink: {problem}", code="invalid_sink")

    async def create_job(self, submit: JobSubmit, actor: Actor | None = None) -> tuple[JobRow, bool]:
        """Validate and store a job (the API's POST /jobs, and each run of a schedule);
        ``(job, created)``: an idempotency key already used gives the first job back. With
        ``actor``, the submission is audited (in the job's own commit when it can be)."""
        self.validate_submit(submit)
        jobs = self.control.config.jobs
        job = JobRow(
            id=self.control.new_id(),
            plugin=submit.plugin,
            params=submit.params,
            cluster=submit.cluster,
            max_attempts=submit.max_attempts or jobs.default_max_attempts,
            timeout_s=submit.timeout_s or jobs.default_timeout_s,
            idempotency_key=submit.idempotency_key,
            sink=submit.sink,
            created_at=time.time(),
        )
        audited = None
        detail = {"job": job.id, "plugin": job.plugin, "cluster": job.cluster}
        if actor is not None and job.idempotency_key is None:
            # Issued before the insert, in the same loop turn: one commit holds both.
            audited = self.store.audit(actor, "job.submit", detail, job.created_at)
        stored, created = await self.dispatcher.submit(job)
        if audited is not None:
            await audited
        elif actor is not None and created:
            await self.store.audit(actor, "job.submit", detail, job.created_at)
        if not created:
            same = (stored.plugin, stored.params, stored.cluster) == (job.plugin, job.params, job.cluster)
            if not same:
                raise Conflict(
                    f"idempotency_key {job.idempotency_key!r} was used for job {stored.id} with other content",
                    code="idempotency_conflict",
                )
        return stored, created

    async def submit_job(self, request: Request) -> Response:
        actor = await self._authorize(request, "operator")
        submit: JobSubmit = await self._body(request, JobSubmit)
        stored, created = await self.create_job(submit, actor)
        view = await self._wait_view(request, stored)
        return json_response(view, 201 if created else 200)

    async def list_jobs(self, request: Request) -> Response:
        await self._authorize(request, "viewer")
        state = request.query_params.get("state")
        if state is not None and state not in ("queued", "running", "succeeded", "failed", "cancelled"):
            raise BadRequest(f"state={state!r} is not a job state")
        limit = int(self._number(request, "limit", 100, 1, 1000))
        max_bytes = self.control.config.server.max_page_bytes
        jobs = await self.store.list_jobs(
            state, request.query_params.get("cluster"), limit, request.query_params.get("before"), max_bytes
        )
        # ``next``: pass it as ``before`` for the following page (None: this was the last).
        # Sized as the store sizes them (their stored JSON text), so both agree where a page ends.
        size = sum(json_size(j.params) + json_size(j.sink) for j in jobs)
        cut = len(jobs) == limit or size >= max_bytes
        return json_response({"jobs": [job_view(j) for j in jobs], "next": jobs[-1].id if jobs and cut else None})

    async def get_job(self, request: Request) -> Response:
        await self._authorize(request, "viewer")
        return json_response(await self._wait_view(request, await self._job(request)))

    async def job_records(self, request: Request) -> Response:
        await self._authorize(request, "viewer")
        job = await self._job(request)
        after = int(self._number(request, "after", 0, 0, 2**62))
        limit = int(self._number(request, "limit", 1000, 1, 10_000))
        if not job.terminal:
            raise Conflict(
                f"job {job.id} is {job.state}: its records are visible once it ends (the final attempt "
                "decides which); wait with GET /api/v1/jobs/{id}?wait=S",
                code="job_not_finished",
            )
        rows = await self.store.records(job.id, job.attempt, after, limit, self.control.config.server.max_page_bytes)
        last = rows[-1][0] if rows else after
        more = bool(rows) and last < job.record_count
        body = b'{"records":[' + b",".join(data for _seq, data in rows) + b'],"next":'
        body += str(last).encode() if more else b"null"
        body += b',"attempt":' + str(job.attempt).encode() + b"}"
        return Response(body, media_type="application/json")

    async def cancel_job(self, request: Request) -> Response:
        actor = await self._authorize(request, "operator")
        job = await self._job(request)
        if job.terminal:
            raise Conflict(f"job {job.id} has ended ({job.state})", code="job_finished")
        job = await self.dispatcher.cancel(job)
        await self.store.audit(actor, "job.cancel", {"job": job.id}, time.time())
        return json_response(job_view(job))

    async def sync_errors(self, request: Request) -> Response:
        """Records the instance rejected, with its message, in record order."""
        await self._authorize(request, "viewer")
        job = await self._job(request)
        if job.sink is None:
            raise NotFound(f"job {job.id} has no sink", code="no_sink")
        after = int(self._number(request, "after", 0, 0, 2**62))
        limit = int(self._number(request, "limit", 100, 1, 1000))
        rows = await self.store.rejected(job.id, after, limit)
        body = [{"seq": r.seq, "status": r.status, "message": r.message, "record": r.record} for r in rows]
        return json_response({"errors": body, "next": rows[-1].seq if len(rows) == limit else None})

    async def retry_sync(self, request: Request) -> Response:
        """Resume a failed delivery (after fixing a secret, or once the instance is back):
        from its cursor, so nothing delivered is sent again."""
        actor = await self._authorize(request, "operator")
        job = await self._job(request)
        delivery = await self.store.delivery(job.id)
        if delivery is None or delivery.state != "failed":
            raise Conflict(
                f"job {job.id}'s delivery is {delivery.state if delivery else 'not started'}: "
                "only a failed one is retried",
                code="sync_not_failed",
            )
        await self.store.retry_delivery(job.id, time.time())
        await self.store.audit(actor, "sync.retry", {"job": job.id}, time.time())
        self.control.sinks.job_finished(job.id, "succeeded")
        return json_response(await self._wait_view(request, job), 202)

    async def list_syncs(self, request: Request) -> Response:
        """The kept state of every named sync: where its next run starts from."""
        await self._authorize(request, "viewer")
        limit = int(self._number(request, "limit", 1000, 1, 1000))
        syncs = await self.store.sync_states(request.query_params.get("after", ""), limit)
        return json_response([dataclasses.asdict(s) for s in syncs])

    async def delete_sync(self, request: Request) -> Response:
        """Forget a sync's state: its next run returns every entry again, and reports no
        deletions (there is nothing to compare with)."""
        actor = await self._authorize(request, "admin")
        name = request.path_params["name"]
        if self.store.sync_state(name) is None:
            raise NotFound(f"no sync named {name!r} has a kept state", code="sync_not_found")
        await self.store.delete_sync_state(name)
        await self.store.audit(actor, "sync.reset", {"sync": name}, time.time())
        return json_response({"name": name, "deleted": True})

    async def list_agents(self, request: Request) -> Response:
        await self._authorize(request, "viewer")
        # A full page (``limit`` agents, by name) may have more: ask again with after=<last name>.
        limit = int(self._number(request, "limit", 1000, 1, 1000))
        agents = await self.store.list_agents(request.query_params.get("after", ""), limit)
        return json_response([self._agent_view(a) for a in agents])

    def _agent_view(self, agent: AgentRow) -> dict[str, Any]:
        link = self.dispatcher.links.get(agent.name)
        return {
            "name": agent.name,
            "cluster": agent.cluster,
            "connected": link is not None,
            "version": link.version if link else agent.version,
            "plugins": sorted(link.plugins) if link else [p["name"] for p in agent.plugins],
            "running": len(link.running) if link else 0,
            "draining": link.draining if link else False,
            "connections": agent.connections,
            "enrolled_at": agent.enrolled_at,
            "last_seen": time.time() if link else agent.last_seen,
            "certificate_expires_at": agent.cert_expires_at,
            "revoked": agent.revoked_at is not None,
        }

    async def revoke_agent(self, request: Request) -> Response:
        """Refuse an agent from now on and end its session at once (it may be enrolled again)."""
        actor = await self._authorize(request, "admin")
        name = request.path_params["name"]
        if not await self.store.revoke_agent(name, actor, time.time()):
            raise NotFound(f"no enrolled, unrevoked agent {name!r}", code="agent_not_found")
        self.dispatcher.disconnect(name, "the agent's identity was revoked")
        return json_response({"name": name, "revoked": True})

    async def ca_certificate(self, request: Request) -> Response:
        """The certificate agents and API clients trust this server with (PEM; public).
        An agent enrolling compares its SHA-256 with the pin in its token before using it."""
        anchor = self.control.trust_anchor_pem
        return Response(anchor, media_type="application/x-pem-file")

    async def enroll(self, request: Request) -> Response:
        body: EnrollRequest = await self._body(request, EnrollRequest)
        secret = body.token.split(".", 1)[0]  # the pin part, if sent, is the agent's business
        if not secret.startswith(ENROLLMENT_TOKEN_PREFIX):
            raise Unauthorized("not an enrolment token (they start with 'bhe_')", code="invalid_token")
        server = self.control.config.server
        try:
            certificate, issued = self.control.authority.issue_agent(
                body.csr.encode(), body.agent, body.cluster, server.agent_cert_ttl_s
            )
        except PkiError as exc:
            raise BadRequest(f"csr: {exc}", code="invalid_csr") from None
        agent = AgentRow(
            name=body.agent,
            cluster=body.cluster,
            agent_id=self.control.new_id(),
            public_key=issued.public_key,
            enrolled_at=time.time(),
            cert_expires_at=issued.not_after,
        )
        grant = EnrollmentGrant(token_hash(secret), agent, address=client_address(request))
        outcome = await self.store.enroll_agent(grant, time.time())
        if isinstance(outcome, EnrollmentRefused):
            raise ApiError(outcome.message, code=outcome.code, status=outcome.status)
        # A replaced identity's session (if any) must not outlive its key.
        self.dispatcher.disconnect(body.agent, "the agent was enrolled again with a new key")
        anchor = self.control.trust_anchor_pem
        return json_response(
            {
                "agent": agent.name,
                "cluster": agent.cluster,
                "agent_id": agent.agent_id,
                "certificate": certificate.decode(),
                "certificate_expires_at": issued.not_after,
                "server_ca": anchor.decode(),
                "signing_keys": [msgspec.to_builtins(k) for k in self.control.signing_keys.published],
            },
            201,
        )

    async def create_enrollment_token(self, request: Request) -> Response:
        actor = await self._authorize(request, "admin")
        body: EnrollmentTokenRequest = await self._body(request, EnrollmentTokenRequest)
        anchor = self.control.trust_anchor_pem
        token, secret = new_enrollment_token(fingerprint(anchor))
        now = time.time()
        await self.store.add_enrollment_token(
            token_hash(secret), body.cluster, now + body.ttl_s, now, body.uses, body.replace
        )
        detail = {"cluster": body.cluster, "ttl_s": body.ttl_s, "uses": body.uses, "replace": body.replace}
        await self.store.audit(actor, "enrollment_token.create", detail, now)
        return json_response({"token": token, "cluster": body.cluster, "expires_at": now + body.ttl_s}, 201)

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok", "agents_connected": len(self.dispatcher.links)})

    async def roles(self, request: Request) -> Response:
        actor = await self._authorize(request, "viewer")
        return json_response({"role": actor.role, "token": actor.id, "name": actor.name, "roles": list(ROLES)})

    # --- tokens and the audit log (admins) --------------------------------------------------

    async def list_tokens(self, request: Request) -> Response:
        await self._authorize(request, "admin")
        return json_response({"tokens": [token_view(t) for t in await self.store.api_tokens()]})

    async def create_token(self, request: Request) -> Response:
        actor = await self._authorize(request, "admin")
        body: ApiTokenRequest = await self._body(request, ApiTokenRequest)
        secret = new_token(API_TOKEN_PREFIX)
        now = time.time()
        expires_at = now + body.ttl_s if body.ttl_s is not None else None
        hashed = token_hash(secret)
        await self.store.add_api_token(hashed, body.role, body.name, now, expires_at)
        token = await self.store.api_token(hashed)
        assert token is not None  # noqa: S101 - just written in this process
        await self.store.audit(
            actor,
            "api_token.create",
            {"token": token.id, "role": body.role, "name": body.name, "ttl_s": body.ttl_s},
            now,
        )
        return json_response({**token_view(token), "token": secret}, 201)

    async def revoke_token(self, request: Request) -> Response:
        actor = await self._authorize(request, "admin")
        token_id = request.path_params["token_id"]
        now = time.time()
        token = await self.store.revoke_api_token(token_id, now)
        if token is None:
            raise NotFound(f"no unrevoked API token {token_id!r}", code="token_not_found")
        self._token_cache.clear()  # refused from the next request on, in this process too
        await self.store.audit(actor, "api_token.revoke", {"token": token.id, "name": token.name}, now)
        return json_response(token_view(token))

    async def audit_log(self, request: Request) -> Response:
        """The audit log, oldest first: page with ``after`` (the ``next`` of the last page)."""
        await self._authorize(request, "admin")
        after = int(self._number(request, "after", 0, 0, 2**62))
        limit = int(self._number(request, "limit", 100, 1, 1000))
        query = request.query_params
        since = self._number(request, "since", 0, 0, 1e11) if "since" in query else None
        until = self._number(request, "until", 0, 0, 1e11) if "until" in query else None
        max_bytes = self.control.config.server.max_page_bytes
        rows = await self.store.audit_log(
            after, limit, query.get("actor"), query.get("action"), since, until, max_bytes
        )
        entries = [dataclasses.asdict(r) for r in rows]
        more = len(rows) == limit or sum(json_size(r.detail) for r in rows) >= max_bytes
        return json_response({"entries": entries, "next": rows[-1].id if rows and more else None})
