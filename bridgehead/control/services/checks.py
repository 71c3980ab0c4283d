"""Everything a job submission is checked for before it is stored.

The limits of ``[jobs]``, the schema the cluster's live agents publish for the plugin, and
the sink against ``[servicenow.NAME]``. ``POST /api/v1/jobs`` and each schedule's template
(when it is created and at each run) go through the same checks.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bridgehead.control.config import ControlConfig
from bridgehead.control.schemas import SchemaRegistry
from bridgehead.control.services.errors import Invalid, LimitExceeded
from bridgehead.control.services.ports import JobDispatcher
from bridgehead.control.services.requests import JobSubmit
from bridgehead.control.sinks.allowlist import refusal
from bridgehead.control.sinks.spec import parse_sink

# Deeper params or sinks are refused: nothing a plugin takes needs them, and they would
# strain every recursive encoder and decoder on the way to the agent and back.
MAX_JSON_DEPTH = 32


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


class SubmitChecks:
    def __init__(self, config: ControlConfig, dispatcher: JobDispatcher, schemas: SchemaRegistry) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.schemas = schemas
        self._plugins_by_cluster: dict[str, tuple[int, dict[str, str]]] = {}

    def check(self, submit: JobSubmit) -> None:
        """``Invalid`` (or ``LimitExceeded``) saying what is wrong with ``submit``."""
        jobs = self.config.jobs
        for name, value in (("params", submit.params), ("sink", submit.sink)):
            if json_depth(value) > MAX_JSON_DEPTH:
                raise LimitExceeded(f"{name} is nested more than {MAX_JSON_DEPTH} levels deep", code="too_deep")
        if len(msgspec.json.encode(submit.params)) > jobs.max_params_bytes:
            raise LimitExceeded(f"params over {jobs.max_params_bytes} bytes")
        timeout = submit.timeout_s or jobs.default_timeout_s
        if timeout > jobs.max_timeout_s:
            raise Invalid(f"timeout_s {timeout:g} is over the maximum of {jobs.max_timeout_s:g}")
        self._check_params(submit)
        if submit.sink is not None:
            self._check_sink(submit.sink)

    def _cluster_plugins(self, cluster: str) -> dict[str, str]:
        """Plugin name -> a live agent of the cluster that offers it (whose published schema
        checks the params). Rebuilt only when the set of live agents changes."""
        version = self.dispatcher.links_version
        cached = self._plugins_by_cluster.get(cluster)
        if cached is not None and cached[0] == version:
            return cached[1]
        plugins: dict[str, str] = {}
        for link in self.dispatcher.links.values():
            if link.cluster != cluster:
                continue
            for name in link.plugins:
                plugins.setdefault(name, link.name)
        self._plugins_by_cluster[cluster] = (version, plugins)
        return plugins

    def _check_params(self, submit: JobSubmit) -> None:
        """Validate params against the schema the cluster's live agents publish for the plugin."""
        plugins = self._cluster_plugins(submit.cluster)
        if not plugins:
            return  # no agent of the cluster is connected: queue it; the agent validates on arrival
        if submit.plugin not in plugins:
            raise Invalid(
                f"no agent of cluster {submit.cluster!r} offers plugin {submit.plugin!r} "
                f"(offered: {', '.join(sorted(plugins))})",
                code="unknown_plugin",
            )
        validator = self.schemas.validator(plugins[submit.plugin], submit.plugin)
        if validator is None or validator.is_valid(submit.params):
            return
        errors = list(validator.iter_errors(submit.params))
        if errors:
            # The deepest error names the field most precisely.
            error = max(errors, key=lambda e: len(e.instance_path))
            where = "params" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.instance_path)
            raise Invalid(f"{where}: {error.message}", code="invalid_params")

    def _check_sink(self, sink: dict[str, Any]) -> None:
        try:
            spec = parse_sink(sink)
        except ValueError as exc:
            raise Invalid(f"sink: {exc}", code="invalid_sink") from None
        instances = self.config.servicenow
        if spec.servicenow not in instances:
            known = ", ".join(sorted(instances)) or "none"
            raise Invalid(
                f"sink: no ServiceNow instance {spec.servicenow!r} in the control plane's configuration "
                f"([servicenow.NAME] tables; configured: {known})",
                code="invalid_sink",
            )
        problem = refusal(spec.servicenow, instances[spec.servicenow], spec)
        if problem is not None:
            raise Invalid(f"sink: {problem}", code="invalid_sink")
