"""Laptop tools: the local AWS, the model registry commands, the demo flow, the agent launcher."""
