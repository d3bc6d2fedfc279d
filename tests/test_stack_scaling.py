"""Scaling on the queue backlog (out from zero, back to zero when idle) and the alarms a person sees."""
import pytest
from aws_cdk.assertions import Match, Template

from stacks.scaling import BIG_BACKLOG_BATCHES
from stacks.synth import synthesize


@pytest.fixture(scope="module")
def template():
    return Template.from_json(synthesize().template)


def alarm_for(template, description_start):
    [alarm] = [a["Properties"] for a in template.find_resources("AWS::CloudWatch::Alarm").values()
               if a["Properties"]["AlarmDescription"].startswith(description_start)]
    return alarm


def big_backlog():
    return BIG_BACKLOG_BATCHES * synthesize().stack.settings.batch_size


def policy_named_by(template, alarm):
    [action] = alarm["AlarmActions"]
    return template.find_resources("AWS::AutoScaling::ScalingPolicy")[action["Ref"]]["Properties"]


def test_the_first_visible_message_adds_a_worker_even_at_zero(template):
    alarm = alarm_for(template, "Jobs are waiting")
    assert (alarm["MetricName"], alarm["Statistic"], alarm["Period"]) == (
        "ApproximateNumberOfMessagesVisible", "Maximum", 60)
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["EvaluationPeriods"]) == (
        "GreaterThanOrEqualToThreshold", 1, 1)
    policy = policy_named_by(template, alarm)
    assert policy["AdjustmentType"] == "ChangeInCapacity"
    assert policy["StepAdjustments"][0] == {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": big_backlog(),
                                            "ScalingAdjustment": 1}


def test_a_big_backlog_asks_for_every_allowed_worker(template):
    policy = policy_named_by(template, alarm_for(template, "Jobs are waiting"))
    assert policy["StepAdjustments"][-1] == {"MetricIntervalLowerBound": big_backlog(), "ScalingAdjustment": 2}


def test_an_empty_queue_for_the_idle_minutes_sets_the_group_to_zero(template):
    alarm = alarm_for(template, "No job waiting or in flight")
    assert alarm["EvaluationPeriods"] == synthesize().stack.settings.idle_minutes_before_scale_in
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanOrEqualToThreshold", 0)
    assert alarm["Metrics"][0]["Expression"] == "visible + inflight + delayed"
    metrics = {m["Id"]: m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"][1:]}
    assert metrics == {"visible": "ApproximateNumberOfMessagesVisible",
                       "inflight": "ApproximateNumberOfMessagesNotVisible",
                       "delayed": "ApproximateNumberOfMessagesDelayed"}
    assert alarm["TreatMissingData"] == "breaching"  # an inactive queue publishes nothing
    policy = policy_named_by(template, alarm)
    assert (policy["AdjustmentType"], policy["StepAdjustments"]) == (
        "ExactCapacity", [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}])


def test_dead_letters_and_old_jobs_raise_alarms(template):
    dead = alarm_for(template, "Jobs failed every retry")
    assert (dead["MetricName"], dead["ComparisonOperator"], dead["Threshold"]) == (
        "ApproximateNumberOfMessagesVisible", "GreaterThanOrEqualToThreshold", 1)
    assert "DeadLetters" in dead["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
    old = alarm_for(template, "A job has waited over")
    assert (old["MetricName"], old["Threshold"]) == ("ApproximateAgeOfOldestMessage",
                                                     synthesize().stack.settings.max_message_age_s)


def test_without_an_e_mail_there_is_no_topic_and_no_alarm_action(template):
    template.resource_count_is("AWS::SNS::Topic", 0)
    assert "AlarmActions" not in alarm_for(template, "Jobs failed every retry")


def test_an_e_mail_setting_subscribes_it_to_both_alarms():
    template = Template.from_json(synthesize((("alarm_email", "ops@example.com"),)).template)
    template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"})
    [topic_id] = template.find_resources("AWS::SNS::Topic")
    for start in ("Jobs failed every retry", "A job has waited over"):
        alarm = alarm_for(template, start)
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}]
    template.has_resource_properties("AWS::SNS::TopicPolicy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}})
