"""Recurring schedules: a job template run on a cron expression in an IANA time zone.

``times`` says when (pure, no I/O), ``scheduler`` starts the runs (through the job
service), ``service`` creates, changes and shows schedules, ``models`` is what goes in and
out; ``bridgehead.control.http.schedules`` serves ``/api/v1/schedules``, and the store keeps
them (``bridgehead.control.store``).
"""
