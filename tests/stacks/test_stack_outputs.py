"""Outputs name everything the tools need; `stack_outputs` reads them back from a deployed stack."""

import json

import boto3
import pytest
from moto import mock_aws

from runtime.registry import POINTER_KEY
from stacks.synth import synthesize
from tools.outputs import REQUIRED_OUTPUTS, StackNotReady, agent_config, stack_outputs

AGENT_CONFIG_KEYS = {
    "queue_url",
    "region",
    "artifacts_bucket",
    "model_pointer",
    "results_bucket",
    "results_prefix",
    "images_bucket",
    "images_prefix",
    "image_suffixes",
    "batch_size",
    "visibility_timeout_s",
    "drain_timeout_s",
    "device",
    "compiled_cache_prefix",
    "asg_name",
    "lifecycle_hook_name",
    "metrics_namespace",
    "log_group",
    "job_topic_arn",
    "dataset_sources",
}


def rendered_agent_config():
    value = synthesize().template["Outputs"]["AgentConfig"]["Value"]
    parts = value["Fn::Join"][1] if isinstance(value, dict) else [value]
    return json.loads("".join(p if isinstance(p, str) else "TOKEN" for p in parts))


def test_outputs_name_every_location_the_tools_need():
    outputs = synthesize().template["Outputs"]
    assert set(REQUIRED_OUTPUTS) | {"ModelPointerKey", "ImageSuffixes", "LifecycleHookName"} <= set(outputs)
    assert all(output.get("Description") for output in outputs.values())


def test_agent_config_output_has_exactly_the_agreed_keys_and_values():
    config = rendered_agent_config()
    assert set(config) == AGENT_CONFIG_KEYS
    settings = synthesize().stack.settings
    assert config["model_pointer"] == POINTER_KEY and config["compiled_cache_prefix"] == "compiled/"
    assert config["image_suffixes"] == list(settings.image_suffixes)
    assert config["batch_size"] == settings.batch_size
    assert config["visibility_timeout_s"] == settings.visibility_timeout_s
    assert (config["images_prefix"], config["results_prefix"]) == ("incoming/", "results/")
    assert (config["device"], config["metrics_namespace"], config["region"]) == ("cuda", "CaptionKit", "us-east-1")
    assert (config["asg_name"], config["lifecycle_hook_name"]) == ("CaptionKit-workers", "captionkit-drain")


def test_local_overrides_replace_agent_config_values_and_reject_unknown_keys():
    outputs = {"AgentConfig": json.dumps({"device": "cuda", "batch_size": 8})}
    assert agent_config(outputs, device="cpu") == {"device": "cpu", "batch_size": 8}
    with pytest.raises(KeyError, match="devcie"):
        agent_config(outputs, devcie="cpu")


@pytest.fixture
def cloudformation(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.client("cloudformation", region_name="us-east-1")


def make_stack(cloudformation, outputs):
    template = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {key: {"Value": f"value-of-{key}"} for key in outputs},
    }
    cloudformation.create_stack(StackName="CaptionKit", TemplateBody=json.dumps(template))


def test_stack_outputs_reads_every_output_of_a_completed_stack(cloudformation):
    make_stack(cloudformation, REQUIRED_OUTPUTS)
    assert stack_outputs("CaptionKit", "us-east-1") == {key: f"value-of-{key}" for key in REQUIRED_OUTPUTS}


def test_stack_outputs_says_which_outputs_are_missing(cloudformation):
    make_stack(cloudformation, [key for key in REQUIRED_OUTPUTS if key != "QueueUrl"])
    with pytest.raises(StackNotReady, match=r"lacks outputs \['QueueUrl'\]"):
        stack_outputs("CaptionKit", "us-east-1")


def test_stack_outputs_says_how_to_deploy_a_missing_stack(cloudformation):
    with pytest.raises(StackNotReady, match="deploy it first .*make local-up"):
        stack_outputs("CaptionKit", "us-east-1")
