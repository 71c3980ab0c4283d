"""``echo``: emits records it is given or makes up, touching nothing outside the agent.

For smoke tests of a deployment ("does a job reach this cluster and come back?"), for the
benchmarks, and as the smallest complete example of a plugin. Params::

    {"records": [{...}, ...]}        emit these records, in order
    {"count": 1000, "size": 100}     emit ``count`` records {"n": i, "pad": "x" * size}
    {"sleep_s": 2.5}                 wait first (cancellable), e.g. to test timeouts
    {"count": 100, "interval_s": 0.1}  pace the records, e.g. to watch a stream
    {"fail": "some_code"}            fail with that error code after emitting

Admins who do not want it set ``agent.disabled_plugins = ["echo"]``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec

from bridgehead.sdk import JobContext, JobError, NoProfile, Params, Plugin


class EchoParams(Params):
    records: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=100_000)] = []
    count: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)] = 0
    size: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    sleep_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 0.0
    interval_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.0
    fail: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class EchoPlugin(Plugin[EchoParams, NoProfile]):
    name = "echo"
    version = "1"
    params_type = EchoParams
    profile_type = NoProfile
    safe_to_repeat = True

    async def run(self, ctx: JobContext[NoProfile], params: EchoParams) -> None:
        if params.sleep_s:
            await asyncio.sleep(params.sleep_s)
        await ctx.emit_many(params.records)
        pad = "x" * params.size
        for n in range(params.count):
            await ctx.emit({"n": n, "pad": pad} if pad else {"n": n})
            if params.interval_s:
                await asyncio.sleep(params.interval_s)
            if n % 10_000 == 9_999:
                ctx.progress(n + 1, params.count)
        if params.fail:
            raise JobError(f"failed on request (params.fail = {params.fail!r})", code=params.fail)
