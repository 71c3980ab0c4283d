"""LDAP: entries per second through the relay, against ldap3's paged search alone.

A real slapd (started here, as the tests do) holds ``--entries`` inetOrgPerson entries. Raw:
ldap3's paged search loop (``Connection.search`` with the paged-results cookie), on one bound
connection, doing nothing with the entries; printed twice: ldap3 as it comes (it decodes each
entry twice, raw and formatted), and with the raw-only decoding the plugin installs, which is
the floor of what the plugin can reach. Relay: an ``ldap`` job through a real control
plane and agent with the same base, filter, attributes and page size, timed from submit until
the job has succeeded, which is when every record is durable in the control plane's store.
The runs alternate (raw, relay, raw, relay...) so that both see the same machine.

    .venv/bin/python bench/ldap_entries.py [--entries 20000] [--runs 3] [--page-size 500]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import ldap3
from _cluster import cluster, timed_relay_job
from bridgehead_testing.ldap_data import base_entries, people
from bridgehead_testing.slapd import Slapd

from bridgehead.plugins.ldap.client import _decode_entries_raw as decode_entries_raw

PAGED_RESULTS = "1.2.840.113556.1.4.319"
FILTER = "(objectClass=inetOrgPerson)"


def raw(server: Slapd, base: str, page_size: int, entries_raw_only: bool = False) -> tuple[int, float]:
    conn = ldap3.Connection(
        ldap3.Server(server.url, get_info=ldap3.NONE), server.reader_dn, server.reader_password, auto_bind=True
    )
    if entries_raw_only:
        decode_entries_raw(conn)
    start = time.perf_counter()
    n, cookie = 0, None
    while True:
        conn.search(base, FILTER, attributes=[ldap3.ALL_ATTRIBUTES], paged_size=page_size, paged_cookie=cookie)
        n += sum(1 for item in conn.response if item["type"] == "searchResEntry")
        cookie = conn.result["controls"].get(PAGED_RESULTS, {}).get("value", {}).get("cookie")
        if not cookie:
            break
    elapsed = time.perf_counter() - start
    conn.unbind()
    return n, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bridgehead-bench-ldap-") as tmp:
        server = Slapd(Path(tmp))
        print(f"loading {args.entries:,} entries into slapd ...", flush=True)
        server.load([*base_entries(), *people(args.entries)])
        server.start()
        try:
            measure(server, args)
        finally:
            server.stop()


def measure(server: Slapd, args: argparse.Namespace) -> None:
    base = f"ou=people,{server.suffix}"
    agent_extra = (
        f'[connections.bench]\nplugin = "ldap"\nurl = "{server.url}"\ncredential = "bench"\n'
        f'page_size = {args.page_size}\n\n[credentials.bench]\nusername = "{server.reader_dn}"\n'
        f'password = "{server.reader_password}"\n'
    )
    raw_rates: list[float] = []
    floor_rates: list[float] = []
    relay_rates: list[float] = []
    params = {"connection": "bench", "base": base, "filter": FILTER}
    with cluster(agent_extra=agent_extra) as (control, _agent):
        api = control.api()
        # One job first: the agent's first connection reads the directory's schema (once).
        api.wait_done(api.submit("ldap", {**params, "base": server.suffix, "scope": "base"})["id"], timeout=60)
        for run in range(1, args.runs + 1):
            n, elapsed = raw(server, base, args.page_size)
            raw_rates.append(n / elapsed)
            print(f"run {run}: raw ldap3 paged search {n:>8,} entries in {elapsed:6.2f} s = {n / elapsed:>8,.0f}/s")
            n, elapsed = raw(server, base, args.page_size, entries_raw_only=True)
            floor_rates.append(n / elapsed)
            print(f"run {run}: same, raw-only decoding {n:>8,} entries in {elapsed:6.2f} s = {n / elapsed:>8,.0f}/s")
            elapsed = timed_relay_job(api, "ldap", params, n, "entries")
            relay_rates.append(n / elapsed)
            rate = n / elapsed
            print(f"run {run}: relay into the store   {n:>8,} entries in {elapsed:6.2f} s = {rate:>8,.0f}/s")
    raw_median, relay_median = statistics.median(raw_rates), statistics.median(relay_rates)
    floor_median = statistics.median(floor_rates)
    print(
        f"\nmedian: raw {raw_median:,.0f} entries/s, relay {relay_median:,.0f} entries/s, "
        f"ratio {relay_median / raw_median:.2f}x (goal >= 0.8x)\n"
        f"against ldap3 set up as the plugin sets it up (entries decoded once, raw): "
        f"{floor_median:,.0f} entries/s, ratio {relay_median / floor_median:.2f}x"
    )


if __name__ == "__main__":
    main()
