"""Alarms a person should see: failed jobs in the dead-letter queue, jobs waiting too long."""
from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct


class Alarms(Construct):
    """Attributes: `dead_letters_not_empty`, `oldest_job_too_old`, and `topic` (None without an e-mail)."""

    def __init__(self, scope: Construct, construct_id: str, *, queue: sqs.IQueue, dead_letters: sqs.IQueue,
                 max_message_age_s: int, alarm_email: str | None) -> None:
        super().__init__(scope, construct_id)
        minute = Duration.minutes(1)
        self.dead_letters_not_empty = cloudwatch.Alarm(
            self, "DeadLettersNotEmpty",
            metric=dead_letters.metric_approximate_number_of_messages_visible(period=minute, statistic="Maximum"),
            threshold=1, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="Jobs failed every retry and wait in the dead-letter queue: read the worker logs, "
            "fix the cause, then redrive them.",
        )
        self.oldest_job_too_old = cloudwatch.Alarm(
            self, "OldestJobTooOld",
            metric=queue.metric_approximate_age_of_oldest_message(period=minute, statistic="Maximum"),
            threshold=max_message_age_s, evaluation_periods=5,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"A job has waited over {max_message_age_s} s: workers cannot launch (quota, "
            "capacity), fail at boot, or cannot keep up.",
        )
        self.topic: sns.Topic | None = None
        if alarm_email:
            self.topic = sns.Topic(self, "Topic", display_name="CaptionKit alarms", enforce_ssl=True)
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
            for alarm in (self.dead_letters_not_empty, self.oldest_job_too_old):
                alarm.add_alarm_action(actions.SnsAction(self.topic))
                alarm.add_ok_action(actions.SnsAction(self.topic))
