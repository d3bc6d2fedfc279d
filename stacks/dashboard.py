"""The fleet's CloudWatch dashboard: backlog, fleet size, images per minute, latency, device time, errors, and
images and device time per GPU."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runtime.agent.metrics import (
    BATCH_SIZE,
    DEVICE_TIME,
    GPU_DIMENSION,
    IMAGE_ERRORS,
    IMAGE_LATENCY,
    IMAGES_DONE,
    QUEUE_WAIT,
)
from stacks.alarms import WORKER_FAILURES

MINUTE = Duration.minutes(1)
WIDTH = 8  # three graphs per row of the 24-unit grid


class Dashboard(Construct):
    """Attributes `dashboard` and `url` (the console link, a stack output)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        queue: sqs.IQueue,
        dead_letters: sqs.IQueue,
        group_name: str,
        metrics_namespace: str,
    ) -> None:
        super().__init__(scope, construct_id)
        agent = lambda metric, stat="Sum", label=None: cloudwatch.Metric(  # noqa: E731
            namespace=metrics_namespace,
            metric_name=metric,
            dimensions_map={"Queue": queue.queue_name},
            statistic=stat,
            period=MINUTE,
            label=label or f"{metric} {stat}",
        )
        group = lambda metric: cloudwatch.Metric(  # noqa: E731 - group metrics, enabled on the group (stacks/fleet.py)
            namespace="AWS/AutoScaling",
            metric_name=metric,
            dimensions_map={"AutoScalingGroupName": group_name},
            statistic="Average",
            period=MINUTE,
        )
        per_gpu = lambda metric, label: cloudwatch.SearchExpression(  # noqa: E731 - one line per GPU of the fleet
            expression=f'SEARCH(\'{{{metrics_namespace},{GPU_DIMENSION},Queue}} MetricName="{metric}" '
            f"Queue=\"{queue.queue_name}\"', 'Sum', 60)",
            label=label,
            period=MINUTE,
        )
        graph = lambda title, left, right=(), **kw: cloudwatch.GraphWidget(  # noqa: E731
            title=title, left=list(left), right=list(right), width=WIDTH, height=6, **kw
        )
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=name,
            widgets=[
                [
                    graph(
                        "Backlog (messages)",
                        [
                            queue.metric_approximate_number_of_messages_visible(period=MINUTE, label="waiting"),
                            queue.metric_approximate_number_of_messages_not_visible(period=MINUTE, label="in flight"),
                        ],
                        [queue.metric_approximate_age_of_oldest_message(period=MINUTE, label="oldest (s)")],
                    ),
                    graph(
                        "Fleet size (instances)",
                        [
                            group("GroupDesiredCapacity"),
                            group("GroupPendingInstances"),
                            group("GroupInServiceInstances"),
                        ],
                    ),
                    graph(
                        "Images per minute",
                        [agent(IMAGES_DONE, label="captioned"), agent(IMAGE_ERRORS, label="error records")],
                    ),
                ],
                [
                    graph(
                        "Latency, S3 event to result (ms)",
                        [agent(IMAGE_LATENCY, p, f"{p}") for p in ("p50", "p90", "p99")],
                        [agent(QUEUE_WAIT, "p90", "queue wait p90")],
                    ),
                    graph(
                        "Device time per image (ms)",
                        [
                            cloudwatch.MathExpression(
                                expression="device / FILL(images, 0)",
                                label="device ms per image",
                                period=MINUTE,
                                using_metrics={"device": agent(DEVICE_TIME), "images": agent(BATCH_SIZE)},
                            )
                        ],
                    ),
                    graph(
                        "Errors and dead letters",
                        [
                            agent(IMAGE_ERRORS, label="error records"),
                            dead_letters.metric_approximate_number_of_messages_visible(
                                period=MINUTE, label="dead letters"
                            ),
                            cloudwatch.Metric(
                                namespace=metrics_namespace,
                                metric_name=WORKER_FAILURES,
                                statistic="Sum",
                                dimensions_map={"AutoScalingGroupName": group_name},
                                period=MINUTE,
                                label="workers given up",
                            ),
                        ],
                    ),
                ],
                [
                    # each agent names its GPU "<instance id>/<index>" (stacks/boot/bootstrap.sh): idle ones show
                    graph("Images per minute, per GPU", [per_gpu(IMAGES_DONE, "")]),
                    graph("Device ms per minute, per GPU (60,000: busy all minute)", [per_gpu(DEVICE_TIME, "")]),
                ],
            ],
        )
        region = Stack.of(self).region
        self.url = f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards:name={name}"
