"""The runtime agent: the SQS batch captioning worker that runs on each GPU instance."""


def main(argv=None) -> int:
    """`python -m runtime agent [--config FILE] [--burst] [--max-batches N]`; see `runtime.agent.cli`."""
    from runtime.agent.cli import main as run

    return run(argv)
