"""`python -m runtime submit`: queue a batch job over existing images; see `runtime.agent.submit`."""
from runtime.agent.submit import main

__all__ = ["main"]
