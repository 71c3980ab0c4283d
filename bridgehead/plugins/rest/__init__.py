"""``rest``: calls an internal HTTP API named by a connection profile and emits its answer.

A job gives a path under the profile's ``base_url`` (never a URL of its own), a method,
query, headers and an optional JSON body; it gets one ``{"status", "headers", "body"}``
record, or with ``records_path`` one record per element of an array in the JSON answer.
docs/plugins/rest.md is the user's reference. Modules, I/O-free first:

    params.py   job params and profile keys (msgspec structs)
    urls.py     building the URL and confining it to base_url
    records.py  turning a response into records
    client.py   aiohttp, imported on first use: session pool, reading, error translation
    plugin.py   RestPlugin, which ties them together
"""

from bridgehead.plugins.rest.params import RestParams, RestProfile
from bridgehead.plugins.rest.plugin import RestPlugin

__all__ = ["RestParams", "RestPlugin", "RestProfile"]
