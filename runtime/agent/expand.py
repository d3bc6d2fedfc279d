"""One job message, expanded and settled: any kind of job into its part messages (runtime.agent.plan)."""

from __future__ import annotations

from typing import Callable

from runtime.agent import plan
from runtime.agent.config import AgentConfig
from runtime.agent.settle import Settle
from runtime.agent.work import Captioner, Message, Work
from runtime.errors import UnknownMessage


class JobExpansion:
    """Owns a `captionkit.job` message until it is settled: expand it (safe to repeat), then delete it; a job no
    agent can ever expand is dead-lettered alone, S3 or SQS trouble sends it back."""

    def __init__(self, *, s3, sqs, config: AgentConfig, settle: Settle, progress: Callable[[Message], None]):
        self.s3, self.sqs, self.config, self.settle, self.progress = s3, sqs, config, settle, progress

    def run(self, message: Message, work: Work, model: Captioner) -> None:
        """Expand `work.job`; `progress(message)` is called as a long expansion goes on (the hold restarts)."""
        try:
            plan.expand(self.s3, self.sqs, self.config, work.job, model, progress=lambda: self.progress(message))
        except UnknownMessage as exc:
            self.settle.dead_letter(message, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - S3/SQS trouble: try the message again later
            self.settle.retry([message], f"job bookkeeping failed: {exc.__class__.__name__}: {exc}")
            return
        self.settle.done([message])
