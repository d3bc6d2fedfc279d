"""The job-completion topic: the agent that writes a job's summary first publishes where it is (e-mail optional)."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class JobNotifications(Construct):
    """Attribute `topic`: an SSL-only SNS topic encrypted with `key`, `email` subscribed when given.

    `allow_publish(role)` lets the agents publish.
    """

    def __init__(self, scope: Construct, construct_id: str, *, email: str | None, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.key = key
        self.topic = sns.Topic(self, "Topic", display_name="CaptionKit jobs done", enforce_ssl=True, master_key=key)
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))

    def allow_publish(self, role: iam.IRole) -> None:
        """sns:Publish on this topic, and its key through SNS only (publishing to an encrypted topic needs it)."""
        role.add_to_principal_policy(
            iam.PolicyStatement(sid="PublishJobDone", actions=["sns:Publish"], resources=[self.topic.topic_arn])
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="EncryptJobDone",
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[self.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"sns.{Stack.of(self).region}.amazonaws.com"}},
            )
        )
