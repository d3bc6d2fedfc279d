"""The job-completion topic: the agent that writes a job's summary first publishes where it is (e-mail optional)."""
from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class JobNotifications(Construct):
    """Attribute `topic`: an SSL-only SNS topic, `email` subscribed when given; `allow_publish(role)` for the agents."""

    def __init__(self, scope: Construct, construct_id: str, *, email: str | None) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Topic", display_name="CaptionKit jobs done", enforce_ssl=True)
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))

    def allow_publish(self, role: iam.IRole) -> None:
        """sns:Publish on this topic only."""
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="PublishJobDone", actions=["sns:Publish"], resources=[self.topic.topic_arn]))
