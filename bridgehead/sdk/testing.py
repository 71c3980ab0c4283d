"""Run one plugin job in-process, the way the agent would, for plugin authors' tests.

``run_plugin`` validates params and profile exactly as the agent does, checks the profile's
policy, applies the timeout and returns the emitted records; a plugin that passes its tests
through this helper behaves the same inside the agent. It ships in the package (like httpx's
mock transport) so that an admin's plugin tests need nothing from this repository's tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from bridgehead.core.errors import InvalidParams, UnknownConnection
from bridgehead.sdk import Credential, JobContext
from bridgehead.sdk.checks import AnyPlugin, parse_params, validate_plugin_class
from bridgehead.sdk.records import RecordArray

DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024


class ListSink:
    """Collects encoded records in memory (it never blocks; the agent's stream does)."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.progress_reports: list[tuple[int | None, int | None, str]] = []

    async def put(self, data: bytes) -> None:
        self.records.append(data)

    async def put_many(self, items: Sequence[bytes]) -> None:
        self.records.extend(items)

    async def put_array(self, records: RecordArray) -> None:
        await self.put_many(records.records())

    def progress(self, done: int | None, total: int | None, message: str) -> None:
        self.progress_reports.append((done, total, message))


async def run_plugin(
    plugin: AnyPlugin,
    params: Mapping[str, Any],
    *,
    profile: Mapping[str, Any] | None = None,
    credential: Credential | None = None,
    timeout_s: float = 60.0,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    other_connections: Mapping[str, tuple[Mapping[str, Any], Credential | None]] | None = None,
) -> list[dict[str, Any]]:
    """Run ``plugin`` once with ``params`` against ``profile``; return its records.

    ``other_connections``: further profiles of the plugin by name, with their credentials,
    for ``ctx.other_connection`` (an ssh ``jump`` host)."""
    validate_plugin_class(type(plugin), type(plugin).__name__)
    parsed = parse_params(plugin, params)

    def convert(keys: Mapping[str, Any] | None, what: str) -> Any:
        try:
            return msgspec.convert({"plugin": plugin.name, **(keys or {})}, plugin.profile_type, strict=True)
        except msgspec.ValidationError as exc:
            raise InvalidParams(f"{what}: {exc}") from None

    parsed_profile = convert(profile, "profile")
    others = {
        name: (convert(keys, f"profile {name!r}"), cred) for name, (keys, cred) in (other_connections or {}).items()
    }

    def connection(name: str) -> tuple[Any, Credential | None]:
        if name not in others:
            raise UnknownConnection(f"no connection profile {name!r} (give it in other_connections)")
        return others[name]

    plugin.check_policy(parsed_profile, parsed)
    sink = ListSink()
    ctx = job_context(
        parsed_profile,
        sink,
        credential=credential,
        timeout_s=timeout_s,
        max_record_bytes=max_record_bytes,
        logger_name=f"bridgehead.plugin.{plugin.name}",
        connections=connection,
    )
    async with asyncio.timeout(timeout_s):
        await plugin.run(ctx, parsed)
    return [msgspec.json.decode(r) for r in sink.records]


def job_context(
    profile: Any,
    sink: ListSink,
    *,
    credential: Credential | None = None,
    timeout_s: float = 60.0,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    logger_name: str = "bridgehead.plugin",
    connections: Callable[[str], tuple[Any, Credential | None]] | None = None,
) -> JobContext[Any]:
    """A job's context as the agent gives it to a plugin, its records going to ``sink``."""
    return JobContext(
        job_id="test-job",
        attempt=1,
        profile=profile,
        credential=credential,
        sink=sink,
        deadline=time.monotonic() + timeout_s,
        max_record_bytes=max_record_bytes,
        logger=logging.getLogger(logger_name),
        connections=connections,
    )
