"""The Bridgehead control plane: job API, agent gateway, dispatcher and store."""

__version__ = "0.1.0"
