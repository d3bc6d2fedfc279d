"""The GPU fleet: a hardened launch template, a group that can sit at zero, spot when chosen, a drain hook."""

import json

from aws_cdk.assertions import Match, Template

from stacks.settings import DLAMI_PARAMETER
from stacks.synth import synthesize

SPOT = (("spot", "true"), ("instance_types", "g5.xlarge,g6.xlarge,g5.2xlarge"), ("max_capacity", "6"))


def launch_data(synthesized):
    [template] = [r for r in synthesized.template["Resources"].values() if r["Type"] == "AWS::EC2::LaunchTemplate"]
    return template["Properties"]["LaunchTemplateData"]


def test_launch_template_requires_imdsv2_and_has_no_key_and_an_encrypted_gp3_root():
    data = launch_data(synthesize())
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
    assert "KeyName" not in data
    [root] = data["BlockDeviceMappings"]
    assert root["Ebs"] == {
        "Encrypted": True,
        "VolumeType": "gp3",
        "DeleteOnTermination": True,
        "VolumeSize": synthesize().stack.settings.root_volume_gb,
    }
    assert root["Ebs"]["VolumeSize"] >= 60  # the DLAMI plus the CUDA torch wheel


def test_workers_accept_no_inbound_traffic(template):
    [group] = template.find_resources("AWS::EC2::SecurityGroup").values()
    assert "SecurityGroupIngress" not in group["Properties"]
    assert template.find_resources("AWS::EC2::SecurityGroupIngress") == {}


def test_ami_comes_from_the_dlami_ssm_parameter_by_default():
    synthesized = synthesize()
    [name] = [n for n, p in synthesized.template["Parameters"].items() if p.get("Default") == DLAMI_PARAMETER]
    assert synthesized.template["Parameters"][name]["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert launch_data(synthesized)["ImageId"] == {"Ref": name}


def test_ami_id_override_needs_no_ssm_parameter():
    synthesized = synthesize((("ami", "ami-0123456789abcdef0"),))
    assert launch_data(synthesized)["ImageId"] == "ami-0123456789abcdef0"
    assert DLAMI_PARAMETER not in json.dumps(synthesized.template)


def test_group_scales_between_zero_and_two_on_demand_by_default(template):
    template.has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {
            "MinSize": "0",
            "MaxSize": "2",
            "DesiredCapacity": Match.absent(),
            "CapacityRebalance": False,
            "MixedInstancesPolicy": {
                "InstancesDistribution": Match.object_like({"OnDemandPercentageAboveBaseCapacity": 100}),
                "LaunchTemplate": Match.object_like({"Overrides": [{"InstanceType": "g5.xlarge"}]}),
            },
        },
    )


def test_spot_setting_uses_several_types_and_capacity_rebalancing():
    template = Template.from_json(synthesize(SPOT).template)
    template.has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {
            "MaxSize": "6",
            "CapacityRebalance": True,
            "MixedInstancesPolicy": {
                "InstancesDistribution": Match.object_like(
                    {
                        "OnDemandBaseCapacity": 0,
                        "OnDemandPercentageAboveBaseCapacity": 0,
                        "SpotAllocationStrategy": "price-capacity-optimized",
                    }
                ),
                "LaunchTemplate": Match.object_like(
                    {
                        "Overrides": [
                            {"InstanceType": "g5.xlarge"},
                            {"InstanceType": "g6.xlarge"},
                            {"InstanceType": "g5.2xlarge"},
                        ]
                    }
                ),
            },
        },
    )


def test_termination_hook_gives_a_worker_one_visibility_timeout_to_drain(template):
    template.has_resource_properties(
        "AWS::AutoScaling::LifecycleHook",
        {
            "LifecycleHookName": "captionkit-drain",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "DefaultResult": "CONTINUE",
            "HeartbeatTimeout": synthesize().stack.settings.visibility_timeout_s,
            "AutoScalingGroupName": {"Ref": Match.string_like_regexp("Group")},
        },
    )


def test_user_data_fetches_the_bundle_and_runs_the_boot_script_with_the_agent_config():
    parts = launch_data(synthesize())["UserData"]["Fn::Base64"]["Fn::Join"][1]
    script = "".join(p if isinstance(p, str) else "<token>" for p in parts)
    assert script.startswith("#!/bin/bash\nset -euo pipefail\n")
    assert "aws s3 cp 's3://<token>/" in script and ".zip' '/opt/captionkit/bundle.zip'" in script
    assert "python3 -m zipfile -e /opt/captionkit/bundle.zip /opt/captionkit/src" in script
    assert 'export CAPTIONKIT_AGENT_CONFIG=\'{"queue_url":"<token>"' in script
    assert "export CAPTIONKIT_TORCH_INDEX_URL=https://pypi.org/simple" in script
    assert script.endswith("\nbash /opt/captionkit/src/stacks/boot/bootstrap.sh")


def test_bundle_holds_the_runtime_its_requirements_and_the_boot_script_only():
    synthesized = synthesize()
    [asset_dir] = [
        p for p in synthesized.assembly_dir.iterdir() if p.name.startswith("asset.") and (p / "runtime").is_dir()
    ]
    files = {str(p.relative_to(asset_dir)) for p in asset_dir.rglob("*") if p.is_file()}
    assert {"runtime/__init__.py", "requirements/runtime.txt", "stacks/boot/bootstrap.sh"} <= files
    assert files == {
        "requirements/runtime.txt",
        "requirements/runtime.lock",
        "requirements/runtime-cuda.lock",
        "stacks/boot/bootstrap.sh",
        "stacks/boot/give_up.sh",
    } | {f for f in files if f.startswith("runtime/")}
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
