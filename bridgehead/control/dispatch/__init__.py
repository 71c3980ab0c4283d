"""Dispatching jobs to agents: pure parts, each testable without sockets or a store, and the
``Dispatcher`` that wires them to the store and the agents' links.

    queues        FairQueues: oldest job first, per cluster and plugin, agents in turn
    attempts      Live (a running attempt), RetryPolicy (retries, lost attempts), sync_name
    leases        Leases: silent agents, lapsed leases, timeouts
    fencing       which frames of which attempt from which agent may change a job
    links         AgentLink (a live agent session), heartbeat flood and credit rules
    waiters       callers waiting for a job's end
    durability    persist, then tell; fail-stop on a failed write
    agent_frames  what each agent frame does (with bridgehead.protocol.jobs)
    dispatcher    Dispatcher: the facade the job API, the app and the gateway use
"""

from bridgehead.control.dispatch.attempts import Live, RetryPolicy
from bridgehead.control.dispatch.dispatcher import Dispatcher
from bridgehead.control.dispatch.links import AgentLink, Flooding

__all__ = ["AgentLink", "Dispatcher", "Flooding", "Live", "RetryPolicy"]
