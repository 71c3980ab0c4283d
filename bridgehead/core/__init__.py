"""What the agent and the control plane share: the error tree, logging, redaction, config reading."""
