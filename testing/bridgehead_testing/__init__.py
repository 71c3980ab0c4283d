"""Test support for Bridgehead's own suite, demo and benchmarks (not installed with the product).

Real servers started on free loopback ports with temporary configs, and the real processes:

    harness         the control plane, agents and the sandbox as subprocesses; API clients
    slapd, sshd     OpenLDAP and OpenSSH servers with throwaway configs
    tinyproxy       an HTTP CONNECT proxy       pki        certificates for TLS tests
    scripted_agent  a protocol-level agent the tests drive frame by frame
    impostor        a control plane that is not ours (for the agent's TLS and signature checks)
    sandbox_server  the ServiceNow sandbox in a subprocess
    child_server    servers in child processes      counting_sink   an HTTP sink that counts
"""
