"""The Bridgehead control plane: job API, agent gateway, dispatcher and store."""
