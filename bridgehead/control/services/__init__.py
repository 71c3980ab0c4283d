"""The control plane's services: what it does, with no HTTP in it.

The HTTP layer (``bridgehead.control.http``), the scheduler and, later, a console call these;
each raises the errors of ``services.errors`` and the caller decides what they become (the
HTTP layer maps them to statuses in one place, ``http.responses``).

* ``jobs``: submit (checked by ``checks``), view, wait, list, records, cancel.
* ``syncs``: a job's delivery to its sink, and the kept state of named syncs.
* ``agents``: enrolment, listing and revoking agents, enrolment tokens.
* ``tokens``: API tokens (who is calling, with a short cache), and the audit log.
* ``releases``: agent releases (upload checked against the release key), wanted versions.
* ``requests``, ``views`` and ``shapes``: the data going in, coming out, and its schema.
* ``ports``: what the services need of the dispatcher (protocols; ``plane`` wires the real one).
"""
