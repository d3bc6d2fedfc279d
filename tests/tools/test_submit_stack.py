"""`make submit` aimed at the deployed stack: the queue and buckets come from its outputs (moto CloudFormation
without cdk, and the session's cdk-deployed local stack), unless the environment names them."""

from __future__ import annotations

import json
import os
import re

import pytest

from dataset_folder import RUN1, Folder
from runtime.aws import client as aws_client
from tools import submit as tools_submit
from tools.target import Target


@pytest.fixture
def restored_environ():
    """tools.submit points this process's AWS clients at the target: put the environment back after."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def moto_stack(stack, aws) -> Target:
    """A CloudFormation stack in moto (no cdk) whose outputs name the test stack's queue and buckets."""
    settings = {**stack.settings, "region": aws["AWS_REGION"], "results_bucket": stack.images}
    outputs = {
        "ArtifactsBucket": stack.artifacts,
        "ImagesBucket": stack.images,
        "ImagesPrefix": "incoming/",
        "ResultsBucket": stack.images,
        "ResultsPrefix": "results/",
        "QueueUrl": stack.queue,
        "DeadLetterQueueUrl": stack.dlq,
        "GroupName": "workers",
        "LogGroup": "logs",
        "AgentConfig": json.dumps(settings),
    }
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    name = f"CaptionKit{stack.id}"
    aws_client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    return Target(name, aws["AWS_REGION"], aws["AWS_ENDPOINT_URL"])


def test_submit_without_a_config_sends_to_the_queue_the_stack_outputs_name(stack, aws, restored_environ):
    target = moto_stack(stack, aws)
    code, printed, region = tools_submit.submit(
        [f"s3://{stack.images}/incoming/set/", "--job-id", "found-it"], resolve=lambda _name: target
    )
    assert code == 0, printed
    answer = json.loads(printed)
    assert answer["summary"] == f"s3://{stack.images}/results/_jobs/found-it/summary.json"
    [message] = stack.sqs.receive_message(QueueUrl=stack.queue, WaitTimeSeconds=1)["Messages"]
    assert json.loads(message["Body"]) == {
        "type": "captionkit.job",
        "job_id": "found-it",
        "run": answer["run"],
        "prefix": f"s3://{stack.images}/incoming/set/",
    }
    assert region == aws["AWS_REGION"]


def test_a_local_submit_says_how_to_start_a_local_agent_instead_of_waking_a_fleet(stack, aws, restored_environ):
    stack.settings["asg_name"] = "workers"  # the stack's group exists on moto too, but no instance ever runs there
    target = moto_stack(stack, aws)
    code, printed, _ = tools_submit.submit([f"s3://{stack.images}/incoming/set/"], resolve=lambda _name: target)
    assert code == 0, printed
    answer = json.loads(printed)
    assert "woke" not in answer["wake"] and "make agent" in answer["wake"], answer


def test_submit_with_the_queue_in_the_environment_never_looks_the_stack_up(stack, monkeypatch, restored_environ):
    monkeypatch.setenv("CAPTIONKIT_QUEUE_URL", stack.queue)
    monkeypatch.setenv("CAPTIONKIT_IMAGES_BUCKET", stack.images)

    def no_stack(_name):
        raise AssertionError("the environment names the queue: no stack lookup")

    code, printed, _ = tools_submit.submit([f"s3://{stack.images}/incoming/", "--job-id", "env-job"], resolve=no_stack)
    assert code == 0, printed
    assert stack.sqs.receive_message(QueueUrl=stack.queue, WaitTimeSeconds=1)["Messages"]


def test_submit_with_no_stack_deployed_says_so_in_one_line_and_queues_nothing(
    aws, monkeypatch, restored_environ, capsys
):
    monkeypatch.setattr(
        tools_submit.targets,
        "resolve",
        lambda _name=None: Target("NoSuchStack", aws["AWS_REGION"], aws["AWS_ENDPOINT_URL"]),
    )
    assert tools_submit.main(["s3://bucket/incoming/"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("submit: no stack NoSuchStack in") and "deploy it first" in err


@pytest.mark.e2e
def test_after_local_up_submit_finds_the_queue_and_status_shows_a_dataset_job_with_its_cost(
    deployed_stack, restored_environ, capsys
):
    from tools import status

    target, outputs = deployed_stack
    code, printed, _ = tools_submit.submit(
        [f"s3://{outputs['ImagesBucket']}/incoming/", "--job-id", "resolved"], resolve=lambda _name: target
    )
    assert code == 0, printed
    sqs = aws_client("sqs", target.region)
    received = sqs.receive_message(
        QueueUrl=outputs["QueueUrl"], MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
    )["Messages"]  # others (S3's test event) stay for their tests
    [ours] = [m for m in received if json.loads(m["Body"]).get("job_id") == "resolved"]
    sqs.delete_message(QueueUrl=outputs["QueueUrl"], ReceiptHandle=ours["ReceiptHandle"])  # no agent runs it

    folder = Folder(aws_client("s3", target.region), outputs["ResultsBucket"], 4)
    assert folder.root == f"{outputs['ResultsPrefix']}_jobs/{folder.job_id}/"
    folder.run(RUN1, [0, 1, 2, 3])
    folder.finish(0, RUN1)
    capsys.readouterr()
    assert status.job(target, outputs, folder.job_id, once=True, timeout_s=None) == 3  # not complete yet
    screen = capsys.readouterr().out
    assert "shards  1/4 finished: 1 done (0 with error rows), 0 failed, 0 in flight, 3 waiting" in screen
    cost_line = re.search(
        r"cost    ~\$([0-9.,]+) so far: (\d+) instance\(s\) now x ([0-9.]+) h since the run was "
        r"queued x \$([0-9.]+)/h \(on-demand",
        screen,
    )
    assert cost_line, screen
    spent, instances, hours, price = map(float, cost_line.groups())
    assert spent == pytest.approx(instances * hours * price, abs=0.01)
