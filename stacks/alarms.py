"""Alarms a person should see: failed jobs, jobs waiting too long, workers failing to start, a stalled fleet."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runtime.agent.metrics import IMAGES_DONE  # the agent's embedded metric per batch, dimension Queue

WORKER_FAILURES = "WorkerFailures"  # put by stacks/boot/give_up.sh, one per worker that gives up


class Alarms(Construct):
    """Attributes: `topic` (always, encrypted with `key`; the e-mail subscription is optional) and one per alarm."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queue: sqs.Queue,
        dead_letters: sqs.IQueue,
        group_name: str,
        metrics_namespace: str,
        max_message_age_s: int,
        stalled_minutes: int,
        alarm_email: str | None,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        minute = Duration.minutes(1)
        at_least = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        quiet = cloudwatch.TreatMissingData.NOT_BREACHING
        self.dead_letters_not_empty = cloudwatch.Alarm(
            self,
            "DeadLettersNotEmpty",
            metric=dead_letters.metric_approximate_number_of_messages_visible(period=minute, statistic="Maximum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=at_least,
            treat_missing_data=quiet,
            alarm_description="Jobs failed every retry and wait in the dead-letter queue: read the worker logs, "
            "fix the cause, then redrive them.",
        )
        self.oldest_job_too_old = cloudwatch.Alarm(
            self,
            "OldestJobTooOld",
            metric=queue.metric_approximate_age_of_oldest_message(period=minute, statistic="Maximum"),
            threshold=max_message_age_s,
            evaluation_periods=5,
            comparison_operator=at_least,
            treat_missing_data=quiet,
            alarm_description=f"A job has waited over {max_message_age_s} s: workers cannot launch (quota, "
            "capacity), fail at boot, or cannot keep up.",
        )
        group = {"AutoScalingGroupName": group_name}
        self.workers_failing = cloudwatch.Alarm(
            self,
            "WorkersFailing",
            metric=cloudwatch.Metric(
                namespace=metrics_namespace,
                metric_name=WORKER_FAILURES,
                dimensions_map=group,
                statistic="Sum",
                period=Duration.minutes(15),
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=at_least,
            treat_missing_data=quiet,
            alarm_description="A worker failed its boot or its agent could not stay up, and marked itself unhealthy "
            "to be replaced (with a growing back-off). Read the give-up and bootstrap logs in the stack's log group.",
        )
        self.fleet_stalled = cloudwatch.Alarm(
            self,
            "FleetStalled",
            metric=cloudwatch.MathExpression(
                expression="IF(serving > 0 AND waiting > 0 AND FILL(done, 0) == 0, 1, 0)",
                using_metrics={
                    "serving": cloudwatch.Metric(
                        namespace="AWS/AutoScaling",
                        metric_name="GroupInServiceInstances",
                        dimensions_map=group,
                        statistic="Minimum",
                        period=minute,
                    ),
                    "waiting": queue.metric_approximate_number_of_messages_visible(period=minute, statistic="Minimum"),
                    "done": cloudwatch.Metric(
                        namespace=metrics_namespace,
                        metric_name=IMAGES_DONE,
                        dimensions_map={"Queue": queue.queue_name},
                        statistic="Sum",
                        period=minute,
                    ),
                },
                period=minute,
                label="in service, messages waiting, no image finished",
            ),
            threshold=1,
            evaluation_periods=stalled_minutes,
            comparison_operator=at_least,
            treat_missing_data=quiet,
            alarm_description=f"Workers are in service and messages wait, but no image finished for {stalled_minutes} "
            "minutes: the agents are hung, crash-looping or cannot reach S3/SQS. Read the agent logs.",
        )
        self.topic = sns.Topic(self, "Topic", display_name="CaptionKit alarms", enforce_ssl=True, master_key=key)
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        for alarm in (self.dead_letters_not_empty, self.oldest_job_too_old, self.workers_failing, self.fleet_stalled):
            alarm.add_alarm_action(actions.SnsAction(self.topic))
            alarm.add_ok_action(actions.SnsAction(self.topic))
