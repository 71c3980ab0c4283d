"""Test support for Bridgehead's own suite, demo and benchmarks (not installed with the product).

Real servers started on free loopback ports with temporary configs, and the real processes:

    harness         the control plane and agents as subprocesses; API clients; ``scaled`` waits
    outages         a TCP proxy whose connections can be cut; a process frozen with SIGSTOP
    slapd, sshd     OpenLDAP and OpenSSH servers with throwaway configs
    ldap_data       the people and groups the directory tests load into slapd
    processes       finding and killing processes through /proc (sshd's leftover sessions)
    tinyproxy       an HTTP CONNECT proxy       pki        certificates for TLS tests
    databases       the PostgreSQL and MariaDB of the SQL tests: connection strings, accounts
    rss             the peak memory of the agent and control plane while a job streams
    scripted_agent  a protocol-level agent the tests drive frame by frame
    impostor        a control plane that is not ours (for the agent's TLS and signature checks)
    sandbox_server  the ServiceNow sandbox in a subprocess
    child_server    servers in child processes      counting_sink   an HTTP sink that counts
    postgres        the PostgreSQL the store tests use    pg_server   a private one to stop
    store_choice    BRIDGEHEAD_TEST_STORE=postgresql: every control plane on a database of its own
    nodes           several control-plane nodes on one database (node_group: the sinks' tests)
    netns           a network namespace joined by links that can be cut (a real partition)
"""
