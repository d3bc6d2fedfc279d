"""Local AWS end to end: moto's server, the real `cdk deploy`, the notification step, S3 events on the queue."""

import json
import socket
from urllib.parse import unquote_plus

import pytest

from tools.local import down, up
from tools.local_aws import MotoServer, aws_client, free_port
from tools.outputs import REQUIRED_OUTPUTS, agent_config


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("local-aws")
    port = free_port()
    outputs = up(port=port, state_dir=state_dir)
    state = json.loads((state_dir / "local-aws.json").read_text())
    yield outputs, state, state_dir
    down(state_dir)


def client(state, service):
    return aws_client(service, state["region"], state["endpoint_url"])


def receive_all(sqs, queue_url):
    messages = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"):
        messages += batch
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return [json.loads(m["Body"]) for m in messages]


def test_deploy_creates_the_resources_and_outputs_read_back_as_on_aws(local):
    outputs, state, _ = local
    assert state["endpoint_url"].startswith("http://localhost:")
    assert set(REQUIRED_OUTPUTS) <= set(outputs)
    s3 = client(state, "s3")
    for bucket in (outputs["ArtifactsBucket"], outputs["ImagesBucket"]):
        s3.head_bucket(Bucket=bucket)
    [group] = client(state, "autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[outputs["GroupName"]])[
        "AutoScalingGroups"
    ]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 2, 0)
    attributes = client(state, "sqs").get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])
    assert json.loads(attributes["Attributes"]["RedrivePolicy"])["maxReceiveCount"] == 5


def test_an_image_under_the_input_prefix_becomes_one_job_message(local):
    outputs, state, _ = local
    s3, sqs = client(state, "s3"), client(state, "sqs")
    bucket = outputs["ImagesBucket"]
    s3.put_object(Bucket=bucket, Key="incoming/x.jpg", Body=b"not really a jpeg")
    s3.put_object(Bucket=bucket, Key="incoming/notes.txt", Body=b"not an image suffix")
    s3.put_object(Bucket=bucket, Key="results/incoming/x.jpg.json", Body=b"{}")
    bodies = receive_all(sqs, outputs["QueueUrl"])
    assert {"Service": "Amazon S3", "Event": "s3:TestEvent"}.items() <= bodies[0].items()
    records = [r for body in bodies for r in body.get("Records", [])]
    # keys in S3 events are URL-encoded, on AWS as on moto
    assert [(r["eventName"], r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"])) for r in records] == [
        ("ObjectCreated:Put", bucket, "incoming/x.jpg")
    ]


def test_agent_config_for_a_local_run_names_the_deployed_resources(local):
    outputs, _, _ = local
    config = agent_config(outputs, device="cpu")
    assert config["device"] == "cpu"
    assert (config["queue_url"], config["images_bucket"], config["artifacts_bucket"]) == (
        outputs["QueueUrl"],
        outputs["ImagesBucket"],
        outputs["ArtifactsBucket"],
    )


def test_the_deployed_wake_up_function_wakes_the_deployed_group_from_zero(local):
    """moto creates the function and the rule but runs neither (no Docker here); the function's code runs in-process."""
    from runtime.lambdas.wake_on_upload import wake

    outputs, state, _ = local
    [function] = [f for f in client(state, "lambda").list_functions()["Functions"] if f["Handler"] == "wake.handler"]
    assert function["Environment"]["Variables"][wake.GROUP_ENV] == outputs["GroupName"]
    events = client(state, "events")
    [rule] = [r for r in events.list_rules()["Rules"] if "wakes the workers" in r.get("Description", "")]
    assert events.list_targets_by_rule(Rule=rule["Name"])["Targets"][0]["Arn"] == function["FunctionArn"]
    autoscaling = client(state, "autoscaling")
    assert wake.wake(autoscaling, outputs["GroupName"], last_look={})["action"] == "woke"
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[outputs["GroupName"]])
    [group] = groups["AutoScalingGroups"]
    assert group["DesiredCapacity"] == 1
    autoscaling.set_desired_capacity(AutoScalingGroupName=outputs["GroupName"], DesiredCapacity=0)


def test_down_stops_the_server_it_started(local):
    _, state, state_dir = local
    port = int(state["endpoint_url"].rsplit(":", 1)[1])
    assert MotoServer(state_dir, port).running_pid() is not None
    assert down(state_dir) is True
    assert not (state_dir / "moto.pid").exists() and not (state_dir / "local-aws.json").exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("localhost", port)) != 0
