"""The params schemas agents publish, compiled into validators for job submission.

A schema is text from an enrolled agent, so it is treated as hostile:
- remote and file references are refused (the retriever below answers every ``$ref`` that
  leaves the document with an error): compiling never opens a socket or a file;
- compiling runs in one worker thread, never on the event loop, so a schema that is slow to
  compile delays only other schemas, not the API or the gateway;
- a schema over ``max_schema_bytes`` is not compiled, and at most ``max_schemas`` distinct
  schemas are kept (a flood of distinct ones stops being compiled, it is not an outage);
- regular expressions (``pattern``) run with a backtracking limit.

Until its schema is compiled (or if it cannot be), a plugin's params are not checked at
submit: the agent validates them again when the offer arrives, so nothing bad runs either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Iterable
from typing import Any

import jsonschema_rs
import msgspec

from bridgehead.protocol import PluginInfo

log = logging.getLogger("bridgehead.control.schemas")
PATTERN_OPTIONS = jsonschema_rs.FancyRegexOptions(backtrack_limit=100_000)


def _refuse(uri: str) -> Any:
    raise ValueError(f"remote references are not followed ({uri[:200]}): a schema must be self-contained")


def compile_schema(schema: dict[str, Any]) -> Any:
    """A validator for ``schema``, or raises ``ValueError`` (blocking: call from a thread)."""
    try:
        return jsonschema_rs.validator_for(schema, retriever=_refuse, pattern_options=PATTERN_OPTIONS)
    except (jsonschema_rs.ValidationError, ValueError, TypeError) as exc:
        raise ValueError(str(exc).splitlines()[0][:300]) from None


class SchemaRegistry:
    def __init__(self, max_schema_bytes: int, max_schemas: int) -> None:
        self.max_schema_bytes = max_schema_bytes
        self.max_schemas = max_schemas
        # agent name -> plugin name -> schema fingerprint (its canonical JSON), or None
        self.by_agent: dict[str, dict[str, bytes | None]] = {}
        self.validators: dict[bytes, Any] = {}  # fingerprint -> validator, or None if it failed
        self._compiling: set[bytes] = set()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="schema-compiler")

    def publish(self, agent: str, plugins: Iterable[PluginInfo]) -> None:
        """Record what ``agent`` says its plugins take; compile new schemas in the background."""
        published: dict[str, bytes | None] = {}
        for plugin in plugins:
            if plugin.params_schema is None:
                published[plugin.name] = None
                continue
            fingerprint = msgspec.json.encode(plugin.params_schema, order="sorted")
            if len(fingerprint) > self.max_schema_bytes:
                log.warning(
                    "agent %s: plugin %s's params schema is %d bytes, over %d: not compiled",
                    agent,
                    plugin.name,
                    len(fingerprint),
                    self.max_schema_bytes,
                )
                published[plugin.name] = None
                continue
            published[plugin.name] = fingerprint
            self._compile_soon(agent, plugin.name, fingerprint, plugin.params_schema)
        self.by_agent[agent] = published

    def _compile_soon(self, agent: str, plugin: str, fingerprint: bytes, schema: dict[str, Any]) -> None:
        if fingerprint in self.validators or fingerprint in self._compiling:
            return
        if len(self.validators) + len(self._compiling) >= self.max_schemas:
            log.warning(
                "agent %s: %d schemas are kept already; plugin %s's is not compiled", agent, self.max_schemas, plugin
            )
            return
        self._compiling.add(fingerprint)
        future = asyncio.get_running_loop().run_in_executor(self._pool, compile_schema, schema)

        def done(result: asyncio.Future[Any]) -> None:
            self._compiling.discard(fingerprint)
            error = result.exception() if not result.cancelled() else None
            if error is not None or result.cancelled():
                log.warning("agent %s: plugin %s's params schema is refused: %s", agent, plugin, error)
                self.validators[fingerprint] = None
            else:
                self.validators[fingerprint] = result.result()

        future.add_done_callback(done)

    def validator(self, agent: str, plugin: str) -> Any:
        """The compiled validator for ``agent``'s ``plugin``, or None (none, not yet, refused)."""
        fingerprint = self.by_agent.get(agent, {}).get(plugin)
        return None if fingerprint is None else self.validators.get(fingerprint)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
