"""The schedules' wall clock: ``time.time``, unless ``BRIDGEHEAD_SCHEDULE_CLOCK_OFFSET_S`` shifts
it (tests only, like ``bridgehead.core.crash_points``: a test of a real minute boundary starts
its control plane a few seconds before one rather than waiting up to a minute for it). Only
the scheduler's reading of the clock moves; tokens, certificates and audit times do not."""

from __future__ import annotations

import os
import time

OFFSET_ENV = "BRIDGEHEAD_SCHEDULE_CLOCK_OFFSET_S"
_offset_s = float(os.environ.get(OFFSET_ENV) or 0.0)


def now() -> float:
    return time.time() + _offset_s
