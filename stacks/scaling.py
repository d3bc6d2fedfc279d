"""Scale the workers on the jobs backlog: out from zero on the first message, back to zero when idle."""
from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

BOOT_WARMUP = Duration.minutes(10)  # install the CUDA wheel, pull and compile the model
BIG_BACKLOG_BATCHES = 100


class BacklogScaling(Construct):
    """Step scaling (target tracking cannot leave zero: backlog per instance is undefined there).

    `jobs_waiting` (any visible message for a minute) adds one worker, or every allowed worker for
    a backlog of BIG_BACKLOG_BATCHES batches, at most once per warm-up; `queue_idle` (nothing visible,
    in flight or delayed for `idle_minutes`) sets the group to zero. Attributes: the two alarms and actions.
    """

    def __init__(self, scope: Construct, construct_id: str, *, group: autoscaling.IAutoScalingGroup,
                 queue: sqs.IQueue, batch_size: int, max_capacity: int, idle_minutes: int) -> None:
        super().__init__(scope, construct_id)
        minute = Duration.minutes(1)
        visible = queue.metric_approximate_number_of_messages_visible(period=minute, statistic="Maximum")
        in_flight = queue.metric_approximate_number_of_messages_not_visible(period=minute, statistic="Maximum")
        delayed = queue.metric("ApproximateNumberOfMessagesDelayed", period=minute, statistic="Maximum")
        self.scale_out = autoscaling.StepScalingAction(
            self, "ScaleOut", auto_scaling_group=group,
            adjustment_type=autoscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            estimated_instance_warmup=BOOT_WARMUP,
            metric_aggregation_type=autoscaling.MetricAggregationType.MAXIMUM,
        )
        big = BIG_BACKLOG_BATCHES * batch_size
        self.scale_out.add_adjustment(lower_bound=0, upper_bound=big, adjustment=1)
        self.scale_out.add_adjustment(lower_bound=big, adjustment=max_capacity)
        self.jobs_waiting = cloudwatch.Alarm(
            self, "JobsWaiting", metric=visible, threshold=1, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="Jobs are waiting: add a worker (scaling signal, not a page).",
        )
        self.jobs_waiting.add_alarm_action(actions.AutoScalingAction(self.scale_out))
        self.scale_in = autoscaling.StepScalingAction(
            self, "ScaleIn", auto_scaling_group=group,
            adjustment_type=autoscaling.AdjustmentType.EXACT_CAPACITY,
            metric_aggregation_type=autoscaling.MetricAggregationType.MAXIMUM,
        )
        self.scale_in.add_adjustment(upper_bound=0, adjustment=0)
        backlog = cloudwatch.MathExpression(
            expression="visible + inflight + delayed",
            using_metrics={"visible": visible, "inflight": in_flight, "delayed": delayed},
            period=minute, label="Messages waiting or being processed",
        )
        self.queue_idle = cloudwatch.Alarm(
            self, "QueueIdle", metric=backlog, threshold=0, evaluation_periods=idle_minutes,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
            # an inactive queue publishes no metrics: no data means nothing to do
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            alarm_description=f"No job waiting or in flight for {idle_minutes} minutes: scale the workers to zero.",
        )
        self.queue_idle.add_alarm_action(actions.AutoScalingAction(self.scale_in))
