"""Several control-plane nodes on one PostgreSQL database: who they are, which are alive, and
how they share the work (docs/operations.md#several-nodes)."""
