"""The plugin SDK: the whole public surface a plugin author needs (see docs/plugins.md).

A plugin is a class with a ``name``, a ``params_type`` struct (the job's params, validated
before the job runs), a ``profile_type`` struct (the keys of its connection profiles, validated when the
agent starts) and an ``async run(ctx, params)`` that emits records through ``ctx``::

    class Hello(Plugin[HelloParams, NoProfile]):
        name = "hello"
        params_type = HelloParams
        profile_type = NoProfile

        async def run(self, ctx: JobContext[NoProfile], params: HelloParams) -> None:
            await ctx.emit({"greeting": f"hello {params.who}"})

``ctx.emit`` applies backpressure: when the control plane is slow or away it blocks once the
agent's memory window and disk spool are full, and nothing is ever dropped. Cancellation and
timeouts arrive as ``asyncio.CancelledError`` at the plugin's current ``await``; blocking
library calls go through ``ctx.run_blocking(fn, on_cancel=...)`` so that a cancel reaches the
source too (``cursor.cancel()``, abandoning a search, closing a channel).

This package is the one import path for plugins, built-in or third-party: what ``__all__``
lists is the contract (tests/unit/test_exports.py holds it), and ``bridgehead.sdk.testing``
runs a plugin in a test as the agent would. Its modules (``fetcher``, ``records``,
``redaction``) and everything else under ``bridgehead`` are internal and may change.

- Writing a plugin: ``Plugin``, ``Params``, ``Profile``, ``NoProfile``, ``Credential``,
  ``JobContext`` (and ``Record``, ``RecordSink``: what ``emit`` takes, where records go).
- Failing a job, each with a stable ``code`` that reaches the job's ``error.code``:
  ``JobError`` and its kinds ``InvalidParams``, ``PolicyDenied``, ``SourceError``,
  ``SourceUnavailable`` (retryable), ``RecordTooLarge`` (raised by ``emit``).
- Fast sources: ``Fetcher`` (a blocking source read in threads ahead of the loop) and
  ``RecordArray`` (a batch of records encoded as one JSON array).
- Sync jobs: ``SyncState``, kept through ``JobContext.keep_sync_state``.
- Secrets: ``register_secret``, ``redact``, ``redact_bytes``.
"""

from __future__ import annotations

from bridgehead.core.errors import (
    InvalidParams,
    JobError,
    PolicyDenied,
    RecordTooLarge,
    SourceError,
    SourceUnavailable,
)
from bridgehead.protocol.messages import SyncState
from bridgehead.sdk.fetcher import Fetcher
from bridgehead.sdk.plugin import (
    Credential,
    JobContext,
    NoProfile,
    Params,
    Plugin,
    Profile,
    Record,
    RecordSink,
)
from bridgehead.sdk.records import RecordArray
from bridgehead.sdk.redaction import redact, redact_bytes, register_secret

__all__ = [
    "Credential",
    "Fetcher",
    "InvalidParams",
    "JobContext",
    "JobError",
    "NoProfile",
    "Params",
    "Plugin",
    "PolicyDenied",
    "Profile",
    "Record",
    "RecordArray",
    "RecordSink",
    "RecordTooLarge",
    "SourceError",
    "SourceUnavailable",
    "SyncState",
    "redact",
    "redact_bytes",
    "register_secret",
]
