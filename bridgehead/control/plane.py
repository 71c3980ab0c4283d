"""The control plane's parts, made once and held for the process's life: the store, the
dispatcher, the sink runner, the scheduler, and the services the HTTP layer, the scheduler
and the agent gateway call (``bridgehead.control.services``).

It imports neither the HTTP layer nor the gateway, which both take it as a parameter.
"""

from __future__ import annotations

import itertools
import json
import secrets
from pathlib import Path

from bridgehead.control.config import ControlConfig, StoreSection
from bridgehead.control.dispatch import Dispatcher
from bridgehead.control.metrics import Metrics
from bridgehead.control.nodes.node_id import node_id
from bridgehead.control.nodes.shared_identity import reconcile_identity
from bridgehead.control.pki import Authority
from bridgehead.control.releases.courier import Courier
from bridgehead.control.releases.files import ReleaseFiles
from bridgehead.control.schedules.scheduler import Scheduler
from bridgehead.control.schedules.service import ScheduleService
from bridgehead.control.schemas import SchemaRegistry
from bridgehead.control.services.agents import AgentService
from bridgehead.control.services.checks import SubmitChecks
from bridgehead.control.services.jobs import JobService
from bridgehead.control.services.nodes import NodeService
from bridgehead.control.services.releases import ReleaseService
from bridgehead.control.services.syncs import SyncService
from bridgehead.control.services.tokens import TokenService
from bridgehead.control.signing_keys import SigningKeys
from bridgehead.control.sinks.runner import SinkRunner
from bridgehead.control.store.base import Store
from bridgehead.control.store.sqlite import SqliteStore
from bridgehead.control.tls import TlsSetup
from bridgehead.core.files import make_private_tree, write_private
from bridgehead.core.tomlconfig import convert
from bridgehead.protocol.signing import OfferSigner

DB_FILE = "control.db"
# Where a data dir's store is when it is not DB_FILE: written by ``serve`` on PostgreSQL, so
# the CLI's commands on the data dir (tokens, revocations) reach the same database.
STORE_FILE = "store.json"


def open_store(data_dir: Path, config: ControlConfig, node: str | None = None) -> Store:
    """The data dir's store; ``node``: this node's name, for a database several share."""
    # 0700/0600 whatever they were found with: the database holds records and OAuth refresh
    # tokens, tls/ and signing/ hold keys (before the database opens: its -wal and -shm take
    # its mode).
    make_private_tree(data_dir)
    store = config.store
    marker = data_dir / STORE_FILE
    if store.backend == "sqlite" and not marker.exists():
        return SqliteStore(data_dir / DB_FILE, synchronous=store.synchronous)
    if store.backend == "sqlite":  # the CLI, with no config: the data dir says where its store is
        store = convert({"backend": "postgresql", **json.loads(marker.read_bytes())}, StoreSection, str(marker))
    from bridgehead.control.store.postgres import PostgresStore  # asyncpg only where used

    opened = PostgresStore(store.database, store.password(), node_id=node)
    # Once it opened: the secret's name, never the secret (the data dir's keys go with this database).
    where = {"database": store.database, "password_env": store.password_env, "password_file": store.password_file}
    if not marker.exists() or json.loads(marker.read_bytes()) != where:
        write_private(marker, json.dumps(where).encode())
    return opened


class ControlPlane:
    """The app-long registry of the control plane's parts."""

    def __init__(self, data_dir: Path, config: ControlConfig, tls: TlsSetup | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        make_private_tree(data_dir)
        # This node's name among the nodes sharing a PostgreSQL database (stable for its data dir).
        self.node_id = node_id(data_dir)
        self.store = open_store(data_dir, config, self.node_id)
        # On PostgreSQL every node serves one CA and signs with one set of keys: the data dir
        # takes the database's (or publishes its own) before they are read.
        reconcile_identity(self.store, data_dir, config.store.identity_secret(), self.node_id)
        self.authority = Authority(data_dir)
        self.signing_keys = SigningKeys(data_dir)
        # None: plain HTTP on loopback (--insecure-http); agents then prove their key only.
        self.tls = tls
        self.metrics = Metrics(self.node_id)
        self.dispatcher = Dispatcher(
            self.store,
            self.metrics,
            heartbeat_s=config.server.heartbeat_s,
            restart_grace_s=config.server.restart_grace_s,
            signer=OfferSigner(self.signing_keys.current, config.server.offer_ttl_s),
            max_credit=config.server.max_agent_credit,
            node_dead_after_s=config.server.node_dead_after_s,
        )
        self._node_url = ""
        self.nodes = NodeService(self.store, self.dispatcher, self.node_id, config.server.node_dead_after_s)
        self.sinks = SinkRunner(self.store, config, self.metrics, node=self.node_id)
        self.dispatcher.on_finished.append(self.sinks.job_finished)
        self.schemas = SchemaRegistry(config.server.max_schema_bytes, config.server.max_schemas)
        self.unauthenticated = 0  # agent connections still in their handshake (gateway)
        # Ids are a random per-process prefix and a counter: unique across restarts and
        # nodes, and without a system call per job (uuid4 reads os.urandom each time).
        self._id_prefix = secrets.token_hex(8)
        self._id_counter = itertools.count(1)

        checks = SubmitChecks(config, self.dispatcher, self.schemas)
        self.jobs = JobService(config, self.store, self.dispatcher, checks, self.new_id)
        self.syncs = SyncService(self.store, self.sinks.job_finished)
        self.agents = AgentService(
            config,
            self.store,
            self.dispatcher,
            self.authority,
            self.signing_keys,
            lambda: self.trust_anchor_pem,
            self.new_id,
        )
        self.tokens = TokenService(config, self.store)
        self.scheduler = Scheduler(self.store, self.jobs, node=self.node_id)
        self.schedules = ScheduleService(config, self.store, self.jobs, self.scheduler)
        self.release_files = ReleaseFiles(data_dir)  # agent releases (the courier serves them)
        self.releases = ReleaseService(config, self.store, self.release_files, self.dispatcher)
        # Hands a cluster's wanted release to its agents, one at a time (courier.py).
        self.courier = Courier(self.store, self.release_files, config.releases, self.dispatcher.links)

    @property
    def node_url(self) -> str:
        """How clients reach this node (``GET /api/v1/nodes``), once it serves."""
        return self._node_url

    @node_url.setter
    def node_url(self, url: str) -> None:
        self._node_url = url
        if self.dispatcher.coordinator is not None:
            self.dispatcher.coordinator.url = url

    @property
    def trust_anchor_pem(self) -> bytes:
        """What agents pin and verify this server with (served at ``GET /api/v1/ca``)."""
        return self.tls.trust_anchor_pem if self.tls is not None else self.authority.trust_anchor()

    def new_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):016x}"
