"""The job API over HTTP (``/api/v1``): JSON in and out, bearer tokens with roles.

A route reads the request (``body``: size limits and msgspec decoding; ``access``: the
bearer token), calls a service (``bridgehead.control.services``) and answers with JSON
(``responses``). Service errors become statuses in one place, ``responses.STATUSES``.
One module of routes per resource: ``jobs``, ``agents``, ``tokens``, ``schedules``;
``routes`` lists them all.
"""
