"""Scale the workers on the backlog per instance; out of zero on the first message, back to zero when idle."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runtime.agent.metrics import MESSAGE_IMAGES, MESSAGES_DONE

BOOT_WARMUP = Duration.minutes(10)  # install the CUDA wheels, pull and load the model
WARM_POOL_WARMUP = Duration.minutes(2)  # start a stopped, prepared instance and load the cached model
# The images a message holds lately, from the agents' MessageImages / MessagesDone (runtime/agent/metrics.py): the
# last minute's where messages finished, else the last known value (REPEAT), else 1 (no agent has reported yet); at
# least 1. IF with no false value leaves a minute without finished messages empty (AWS's metric-math functions,
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/using-metric-math.html).
IMAGES_PER_MESSAGE = "FILL(FILL(IF(messages > 0, images / messages), REPEAT), 1)"
BACKLOG_PER_INSTANCE = "(visible + inflight) * IF(held < 1, 1, held) / inservice"
AT_LEAST = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
AT_MOST = cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD


class BacklogScaling(Construct):
    """Target tracking on images waiting or in flight per in-service worker, plus two step policies at the edges.

    `backlog` (AWS's recommended queue-worker scaling, with metric math: https://docs.aws.amazon.com/autoscaling/
    ec2/userguide/ec2-auto-scaling-target-tracking-metric-math.html) holds `target_per_instance` images per
    worker: the queue counts messages, and a message holds one uploaded image, a prefix job's part of 64 or a
    dataset shard of thousands, so the messages are multiplied by the images a message has held lately, as the
    agents report them (IMAGES_PER_MESSAGE). In-flight messages count, so a busy worker that prefetched the whole
    queue is not scaled in.
    Target tracking cannot leave zero (no instance: no ratio), so `from_zero` sets one worker when messages wait
    and the group's desired capacity is 0 (the wake-up function usually got there first); `queue_idle` (nothing
    visible, in flight or delayed for `idle_minutes`) sets the group to zero. Scale-in drains: the group's
    termination hook lets a worker finish its batch (stacks/fleet.py).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        group: autoscaling.AutoScalingGroup,
        queue: sqs.IQueue,
        metrics_namespace: str,
        target_per_instance: float,
        idle_minutes: int,
        warm_pool: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        minute = Duration.minutes(1)
        visible = queue.metric_approximate_number_of_messages_visible(period=minute, statistic="Maximum")
        in_flight = queue.metric_approximate_number_of_messages_not_visible(period=minute, statistic="Maximum")
        delayed = queue.metric("ApproximateNumberOfMessagesDelayed", period=minute, statistic="Maximum")
        group_metric = {
            "namespace": "AWS/AutoScaling",
            "dimensions_map": {"AutoScalingGroupName": group.auto_scaling_group_name},
            "period": minute,
            "statistic": "Maximum",
        }
        in_service = cloudwatch.Metric(metric_name="GroupInServiceInstances", **group_metric)
        agents = {
            "namespace": metrics_namespace,
            "dimensions_map": {"Queue": queue.queue_name},  # the fleet's totals (runtime.agent.metrics.batch_metrics)
            "period": minute,
            "statistic": "Sum",
        }
        desired = cloudwatch.Metric(metric_name="GroupDesiredCapacity", **group_metric)
        self.backlog = autoscaling.CfnScalingPolicy(
            self,
            "Backlog",
            auto_scaling_group_name=group.auto_scaling_group_name,
            policy_type="TargetTrackingScaling",
            estimated_instance_warmup=int((WARM_POOL_WARMUP if warm_pool else BOOT_WARMUP).to_seconds()),
            target_tracking_configuration=autoscaling.CfnScalingPolicy.TargetTrackingConfigurationProperty(
                target_value=target_per_instance,
                customized_metric_specification=autoscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty(
                    metrics=[
                        _query("visible", visible),
                        _query("inflight", in_flight),
                        _query("inservice", in_service),
                        _query("messages", cloudwatch.Metric(metric_name=MESSAGES_DONE, **agents)),
                        _query("images", cloudwatch.Metric(metric_name=MESSAGE_IMAGES, **agents)),
                        autoscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty(
                            id="held",
                            expression=IMAGES_PER_MESSAGE,
                            return_data=False,
                            label="Images a finished message held lately",
                        ),
                        autoscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty(
                            id="backlog",
                            expression=BACKLOG_PER_INSTANCE,
                            return_data=True,
                            label="Images waiting or in flight per in-service worker",
                        ),
                    ]
                ),
            ),
        )
        self.from_zero = self._exact_capacity(
            "FromZero",
            group,
            capacity=1,
            threshold=1,
            comparison=AT_LEAST,
            metric=cloudwatch.MathExpression(
                expression="IF(FILL(desired, 0) == 0 AND visible > 0, 1, 0)",
                using_metrics={"desired": desired, "visible": visible},
                period=minute,
                label="Messages wait and no worker is asked for",
            ),
            periods=1,
            missing=cloudwatch.TreatMissingData.NOT_BREACHING,
            description="Jobs wait and the group is at zero: ask for one worker (scaling signal, not a page).",
        )
        self.queue_idle = self._exact_capacity(
            "QueueIdle",
            group,
            capacity=0,
            threshold=0,
            comparison=AT_MOST,
            metric=cloudwatch.MathExpression(
                expression="visible + inflight + delayed",
                period=minute,
                label="Messages waiting or being processed",
                using_metrics={"visible": visible, "inflight": in_flight, "delayed": delayed},
            ),
            # an inactive queue publishes no metrics: no data means nothing to do
            periods=idle_minutes,
            missing=cloudwatch.TreatMissingData.BREACHING,
            description=f"No job waiting or in flight for {idle_minutes} minutes: scale the workers to zero.",
        )

    def _exact_capacity(
        self,
        name: str,
        group,
        *,
        capacity: int,
        metric,
        threshold: int,
        comparison,
        periods: int,
        missing,
        description: str,
    ) -> cloudwatch.Alarm:
        action = autoscaling.StepScalingAction(
            self,
            f"{name}Action",
            auto_scaling_group=group,
            adjustment_type=autoscaling.AdjustmentType.EXACT_CAPACITY,
            metric_aggregation_type=autoscaling.MetricAggregationType.MAXIMUM,
        )
        if comparison == AT_MOST:
            action.add_adjustment(upper_bound=0, adjustment=capacity)
        else:
            action.add_adjustment(lower_bound=0, adjustment=capacity)
        alarm = cloudwatch.Alarm(
            self,
            name,
            metric=metric,
            threshold=threshold,
            evaluation_periods=periods,
            comparison_operator=comparison,
            treat_missing_data=missing,
            alarm_description=description,
        )
        alarm.add_alarm_action(actions.AutoScalingAction(action))
        return alarm


def _query(query_id: str, metric: cloudwatch.Metric):
    """One metric of a target-tracking metric-math specification, from a CloudWatch metric."""
    config = metric.to_metric_config().metric_stat
    return autoscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty(
        id=query_id,
        return_data=False,
        metric_stat=autoscaling.CfnScalingPolicy.TargetTrackingMetricStatProperty(
            stat=config.statistic,
            metric=autoscaling.CfnScalingPolicy.MetricProperty(
                namespace=config.namespace,
                metric_name=config.metric_name,
                dimensions=[
                    autoscaling.CfnScalingPolicy.MetricDimensionProperty(name=d.name, value=d.value)
                    for d in config.dimensions or []
                ],
            ),
        ),
    )
