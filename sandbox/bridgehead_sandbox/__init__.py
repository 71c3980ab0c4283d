"""bridgehead-sandbox: a local STAND-IN for a ServiceNow instance, for the demo and the tests.

It is not ServiceNow and does not pretend to be: every answer carries the header
``X-Bridgehead-Sandbox: stand-in``. It serves the parts of an instance that Bridgehead's
ServiceNow sink talks to, in the shapes /work/shared/SERVICENOW_API.md records (and
docs/sandbox.md summarises):

- the Table API (``/api/now/table``) with encoded queries, fields, paging and display values;
- the Import Set API (``/api/now/import``, single rows and ``insertMultiple``) with transform
  maps from the config: field maps, coalesce, rejected and ignored rows;
- ``/oauth_token.do`` (password, refresh_token, client_credentials and JWT bearer grants),
  bearer tokens and HTTP Basic;
- the Batch API (``/api/now/v1/batch``);
- the inbound REST rate limit (429 with ``Retry-After`` and ``X-RateLimit-*``);
- and, for tests, injectable faults (latency, 5xx, dropped connections, outages) with admin
  endpoints under ``/sandbox/`` to change them while it runs.

Data lives in SQLite (WAL) in the data dir and survives a restart. Modules:

    cli        the command: ``bridgehead-sandbox serve`` (started by ``bridgehead.core.serve``)
    config     the TOML configuration
    app        the parts, the routes, the per-request layer (faults, auth, rate limit)
    table_api, import_api, oauth_api, admin_api, batch_api   the HTTP endpoints
    query      encoded queries (sans-I/O)      records    ServiceNow's record shape
    schema     sys_db_object / sys_dictionary  values     values in the instance's forms
    store      tables in memory + SQLite       transform  transform maps    imports  import sets
    sessions   session cookies, one transaction at a time    quota  the transaction quota
    auth       users, tokens and grants        limits     rate limit, body size
    faults     fault injection, request stats  server     dropping a connection (uvicorn protocol)
    errors     ServiceNow's error envelope     responses  JSON in and out
"""

__version__ = "0.1.0"
