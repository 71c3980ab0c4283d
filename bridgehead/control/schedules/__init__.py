"""Recurring schedules: a job template run on a cron expression in an IANA time zone.

``times`` says when (pure, no I/O), ``scheduler`` starts the runs, ``api`` serves
``/api/v1/schedules``; the SQLite side is ``bridgehead.control.store.schedules``.
"""
