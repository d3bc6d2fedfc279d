"""Scaling on the queue backlog (out from zero, back to zero when idle) and the alarms a person sees."""

from aws_cdk.assertions import Match, Template

from runtime.agent.metrics import MESSAGE_IMAGES, MESSAGES_DONE
from stacks.synth import synthesize
from stacks.worker_policy import METRICS_NAMESPACE


def alarm_for(template, description_start):
    [alarm] = [
        a["Properties"]
        for a in template.find_resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["AlarmDescription"].startswith(description_start)
    ]
    return alarm


def policy_named_by(template, alarm):
    [action] = alarm["AlarmActions"]
    return template.find_resources("AWS::AutoScaling::ScalingPolicy")[action["Ref"]]["Properties"]


def target_tracking(template):
    [policy] = [
        p["Properties"]
        for p in template.find_resources("AWS::AutoScaling::ScalingPolicy").values()
        if p["Properties"]["PolicyType"] == "TargetTrackingScaling"
    ]
    return policy


def test_workers_track_the_backlog_per_in_service_instance_with_metric_math(template):
    policy = target_tracking(template)
    settings = synthesize().stack.settings
    config = policy["TargetTrackingConfiguration"]
    assert config["TargetValue"] == settings.images_per_s_per_instance * settings.accepted_latency_s == 1200
    assert config.get("DisableScaleIn", False) is False  # target tracking may scale in; the drain hook protects work
    queries = {q["Id"]: q for q in config["CustomizedMetricSpecification"]["Metrics"]}
    [returned] = [q for q in queries.values() if q["ReturnData"]]
    assert returned["Expression"] == "(visible + inflight) * IF(held < 1, 1, held) / inservice"
    assert queries["held"]["Expression"] == "FILL(FILL(IF(messages > 0, images / messages), REPEAT), 1)"
    named = {
        i: (q["MetricStat"]["Metric"]["Namespace"], q["MetricStat"]["Metric"]["MetricName"])
        for i, q in queries.items()
        if "MetricStat" in q
    }
    assert named == {
        "visible": ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        "inflight": ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible"),
        "inservice": ("AWS/AutoScaling", "GroupInServiceInstances"),
        "messages": (METRICS_NAMESPACE, MESSAGES_DONE),
        "images": (METRICS_NAMESPACE, MESSAGE_IMAGES),
    }
    for agents in ("messages", "images"):  # the fleet's totals, as the agents publish them (dimension Queue only)
        stat = queries[agents]["MetricStat"]
        assert stat["Stat"] == "Sum" and [d["Name"] for d in stat["Metric"]["Dimensions"]] == ["Queue"]
    assert queries["inservice"]["MetricStat"]["Metric"]["Dimensions"] == [
        {"Name": "AutoScalingGroupName", "Value": policy["AutoScalingGroupName"]}
    ]
    assert policy["EstimatedInstanceWarmup"] == 600


def test_the_backlog_target_follows_the_measured_rate_and_the_accepted_latency():
    template = Template.from_json(
        synthesize((("images_per_s_per_instance", "2.5"), ("accepted_latency_s", "60"))).template
    )
    assert target_tracking(template)["TargetTrackingConfiguration"]["TargetValue"] == 150


def test_messages_waiting_at_zero_ask_for_exactly_one_worker(template):
    alarm = alarm_for(template, "Jobs wait and the group is at zero")
    [expression] = [m for m in alarm["Metrics"] if "Expression" in m]
    assert expression["Expression"] == "IF(FILL(desired, 0) == 0 AND visible > 0, 1, 0)"
    named = {m["Id"]: m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert named == {"desired": "GroupDesiredCapacity", "visible": "ApproximateNumberOfMessagesVisible"}
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["EvaluationPeriods"]) == (
        "GreaterThanOrEqualToThreshold",
        1,
        1,
    )
    policy = policy_named_by(template, alarm)
    assert (policy["AdjustmentType"], policy["StepAdjustments"]) == (
        "ExactCapacity",
        [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
    )


def test_step_scaling_remains_only_at_the_edges_zero_to_one_and_idle_to_zero(template):
    policies = template.find_resources("AWS::AutoScaling::ScalingPolicy")
    assert sorted(p["Properties"]["PolicyType"] for p in policies.values()) == [
        "StepScaling",
        "StepScaling",
        "TargetTrackingScaling",
    ]
    scaling_alarms = [
        a["Properties"]
        for a in template.find_resources("AWS::CloudWatch::Alarm").values()
        if any(action.get("Ref") in policies for action in a["Properties"].get("AlarmActions", []))
    ]
    assert sorted(a["AlarmDescription"].split(":")[0] for a in scaling_alarms) == [
        "Jobs wait and the group is at zero",
        "No job waiting or in flight for 15 minutes",
    ]


def test_an_empty_queue_for_the_idle_minutes_sets_the_group_to_zero(template):
    alarm = alarm_for(template, "No job waiting or in flight")
    assert alarm["EvaluationPeriods"] == synthesize().stack.settings.idle_minutes_before_scale_in
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanOrEqualToThreshold", 0)
    assert alarm["Metrics"][0]["Expression"] == "visible + inflight + delayed"
    metrics = {m["Id"]: m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"][1:]}
    assert metrics == {
        "visible": "ApproximateNumberOfMessagesVisible",
        "inflight": "ApproximateNumberOfMessagesNotVisible",
        "delayed": "ApproximateNumberOfMessagesDelayed",
    }
    assert alarm["TreatMissingData"] == "breaching"  # an inactive queue publishes nothing
    policy = policy_named_by(template, alarm)
    assert (policy["AdjustmentType"], policy["StepAdjustments"]) == (
        "ExactCapacity",
        [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}],
    )


def test_dead_letters_and_old_jobs_raise_alarms(template):
    dead = alarm_for(template, "Jobs failed every retry")
    assert (dead["MetricName"], dead["ComparisonOperator"], dead["Threshold"]) == (
        "ApproximateNumberOfMessagesVisible",
        "GreaterThanOrEqualToThreshold",
        1,
    )
    assert "DeadLetters" in dead["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
    old = alarm_for(template, "A job has waited over")
    assert (old["MetricName"], old["Threshold"]) == (
        "ApproximateAgeOfOldestMessage",
        synthesize().stack.settings.max_message_age_s,
    )


PERSON_ALARMS = (
    "Jobs failed every retry",
    "A job has waited over",
    "A worker failed its boot",
    "Workers are in service and messages wait",
)


def test_every_alarm_notifies_the_one_topic_even_without_an_e_mail(template):
    template.resource_count_is("AWS::SNS::Subscription", 0)
    [topic_id] = template.find_resources("AWS::SNS::Topic", {"Properties": {"DisplayName": "CaptionKit alarms"}})
    for start in PERSON_ALARMS:
        alarm = alarm_for(template, start)
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}], start
    template.has_output("AlarmTopicArn", {"Value": {"Ref": topic_id}})


def test_workers_failing_to_start_alarm_on_the_give_up_metric_of_this_group(template):
    alarm = alarm_for(template, "A worker failed its boot")
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("CaptionKit", "WorkerFailures", "Sum")
    assert alarm["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": "CaptionKit-workers"}]
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_a_fleet_in_service_with_work_waiting_but_nothing_finished_alarms_after_the_stalled_minutes(template):
    alarm = alarm_for(template, "Workers are in service and messages wait")
    [expression] = [m for m in alarm["Metrics"] if "Expression" in m]
    assert expression["Expression"] == "IF(serving > 0 AND waiting > 0 AND FILL(done, 0) == 0, 1, 0)"
    named = {m["Id"]: m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert named["serving"]["MetricName"] == "GroupInServiceInstances"
    assert named["waiting"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert (named["done"]["Namespace"], named["done"]["MetricName"]) == ("CaptionKit", "ImagesDone")
    assert alarm["EvaluationPeriods"] == synthesize().stack.settings.stalled_minutes


def test_an_e_mail_setting_subscribes_it_to_the_alarm_topic():
    template = Template.from_json(synthesize((("alarm_email", "ops@example.com"),)).template)
    template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"})
    [topic_id] = template.find_resources("AWS::SNS::Topic", {"Properties": {"DisplayName": "CaptionKit alarms"}})
    for start in PERSON_ALARMS:
        alarm = alarm_for(template, start)
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}]
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )
