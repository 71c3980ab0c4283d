"""The Bridgehead agent: keeps one outbound websocket to a control plane and runs its jobs."""
