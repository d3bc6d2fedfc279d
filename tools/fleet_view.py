"""What `make status` reads from the deployed stack: queue, fleet, model, the agents' metrics and errors, cost."""

from __future__ import annotations

import collections
import datetime
import json

from runtime import registry
from runtime.agent.metrics import CAPTURE_FAILED, DEVICE_TIME, GPU_DIMENSION, IMAGE_ERRORS, IMAGES_DONE
from stacks.instance_types import gpu_count
from tools import cost

GROUP_INSTANCES = "GroupTotalInstances"  # pending + in service + terminating: what is billed (group metrics)
FAILED_EVENT = "image_failed"  # the agent's log event for an image that became an error record
COST_PERIOD_S = 300


def queue_counts(sqs, url: str) -> dict[str, int]:
    names = {
        "waiting": "ApproximateNumberOfMessages",
        "in_flight": "ApproximateNumberOfMessagesNotVisible",
        "delayed": "ApproximateNumberOfMessagesDelayed",
    }
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names.values()))["Attributes"]
    return {key: int(attrs.get(name, 0)) for key, name in names.items()}


def fleet(autoscaling, ec2, group_name: str) -> dict:
    """Desired/min/max, instances by state, and the running ones by type and purchase option."""
    [group] = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"]
    states = collections.Counter(i["LifecycleState"].split(":")[0] for i in group.get("Instances", []))
    ids = [i["InstanceId"] for i in group.get("Instances", [])]
    kinds: collections.Counter = collections.Counter()
    if ids:
        for reservation in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            for instance in reservation["Instances"]:
                kinds[(instance["InstanceType"], instance.get("InstanceLifecycle") or "on-demand")] += 1
    overrides = group.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {}).get("Overrides", [])
    counts = [(gpu_count(t), n) for (t, _), n in kinds.items()]
    return {
        "desired": group["DesiredCapacity"],
        "min": group["MinSize"],
        "max": group["MaxSize"],
        "pending": states["Pending"],
        "in_service": states["InService"],
        "terminating": states["Terminating"],
        "running": sorted(kinds.items()),
        "gpus": None if any(g is None for g, _ in counts) else sum(g * n for g, n in counts),
        "configured_types": [o["InstanceType"] for o in overrides if "InstanceType" in o],
    }


def model(s3, bucket: str, pointer_key: str) -> dict | None:
    pointer = registry.current_pointer(s3, bucket, pointer_key)
    if pointer is None:
        return None
    return {"name": pointer.get("model", "?"), "sha256": pointer["sha256"], "published": pointer.get("uploaded_at")}


def series(cloudwatch, queries: dict[str, tuple[str, str, dict, str]], start, end, period_s: int) -> dict:
    """{id: {timestamp: value}} for queries {id: (namespace, metric, dimensions, statistic)}."""
    data = [
        {
            "Id": key,
            "ReturnData": True,
            "MetricStat": {
                "Metric": {
                    "Namespace": ns,
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                },
                "Period": period_s,
                "Stat": stat,
            },
        }
        for key, (ns, name, dims, stat) in queries.items()
    ]
    out: dict[str, dict] = {key: {} for key in queries}
    for page in cloudwatch.get_paginator("get_metric_data").paginate(
        MetricDataQueries=data, StartTime=start, EndTime=end
    ):
        for result in page["MetricDataResults"]:
            out[result["Id"]].update(zip(result["Timestamps"], result["Values"]))
    return out


def activity(
    cloudwatch,
    namespace: str,
    queue_name: str,
    group_name: str,
    prices: dict[str, float],
    instance_types: list[str],
    now: datetime.datetime,
) -> dict:
    """Images done/failed in the last hour and per minute, decode graph captures that failed in the last hour, and
    the last day's cost."""
    queue, group = {"Queue": queue_name}, {"AutoScalingGroupName": group_name}
    hour = series(
        cloudwatch,
        {
            "done": (namespace, IMAGES_DONE, queue, "Sum"),
            "failed": (namespace, IMAGE_ERRORS, queue, "Sum"),
            "capture": (namespace, CAPTURE_FAILED, queue, "Sum"),
        },
        now - datetime.timedelta(hours=1),
        now,
        60,
    )
    day = series(
        cloudwatch,
        {
            "done": (namespace, IMAGES_DONE, queue, "Sum"),
            "instances": ("AWS/AutoScaling", GROUP_INSTANCES, group, "Average"),
        },
        now - datetime.timedelta(days=1),
        now,
        COST_PERIOD_S,
    )
    done, failed = int(sum(hour["done"].values())), int(sum(hour["failed"].values()))
    price, price_source = cost.hourly_price(instance_types, prices)
    return {
        "done_hour": done,
        "failed_hour": failed,
        "per_minute": round((done + failed) / 60, 2),
        "capture_failed_hour": int(sum(hour["capture"].values())),
        "cost": {
            **cost.fleet_cost(day["instances"], day["done"], COST_PERIOD_S, price),
            "price_per_hour": price,
            "price_source": price_source,
        },
    }


def per_gpu(cloudwatch, namespace: str, queue_name: str, now: datetime.datetime) -> list[dict]:
    """Each GPU that reported in the last hour ("<instance id>/<index>", the agents' Gpu dimension): its images
    done and its share of the hour on the device, busiest first."""
    found = []
    for page in cloudwatch.get_paginator("list_metrics").paginate(
        Namespace=namespace,
        MetricName=IMAGES_DONE,
        RecentlyActive="PT3H",
        Dimensions=[{"Name": "Queue", "Value": queue_name}, {"Name": GPU_DIMENSION}],
    ):
        found += [d["Value"] for m in page["Metrics"] for d in m["Dimensions"] if d["Name"] == GPU_DIMENSION]
    gpus = sorted(set(found))[:250]  # two queries each, 500 per call
    queries = {
        f"{kind}{i}": (namespace, metric, {"Queue": queue_name, GPU_DIMENSION: gpu}, "Sum")
        for i, gpu in enumerate(gpus)
        for kind, metric in (("d", IMAGES_DONE), ("t", DEVICE_TIME))
    }
    hour = series(cloudwatch, queries, now - datetime.timedelta(hours=1), now, 3600) if queries else {}
    rows = [
        {
            "gpu": gpu,
            "done": int(sum(hour[f"d{i}"].values())),
            "device_share": round(sum(hour[f"t{i}"].values()) / 3_600_000, 3),
        }
        for i, gpu in enumerate(gpus)
    ]
    return sorted(rows, key=lambda row: (-row["done"], row["gpu"]))


def recent_errors(logs, log_group: str, since: datetime.datetime, limit: int = 5) -> list[dict]:
    """The last `limit` image_failed log lines (uri and reason) shipped to the stack's log group since `since`."""
    events, token = [], None
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = logs.filter_log_events(
            logGroupName=log_group, filterPattern=f'"{FAILED_EVENT}"', startTime=int(since.timestamp() * 1000), **kwargs
        )
        events += page.get("events", [])
        token = page.get("nextToken")
        if not token or len(events) > 1000:
            break
    found = []
    for event in sorted(events, key=lambda e: e["timestamp"])[-limit:]:
        try:
            line = json.loads(event["message"])
        except ValueError:
            line = {"reason": event["message"]}
        found.append(
            {
                "time": datetime.datetime.fromtimestamp(event["timestamp"] / 1000, datetime.UTC),
                "uri": line.get("uri", "?"),
                "reason": line.get("reason", ""),
            }
        )
    return found
