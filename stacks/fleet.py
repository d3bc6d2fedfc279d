"""The GPU workers: a hardened launch template, the auto scaling group and its drain hook."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from stacks.bundle import boot_user_data
from stacks.network import Network
from stacks.settings import Settings

LIFECYCLE_HOOK_NAME = "captionkit-drain"
LAUNCH_HOOK_NAME = "captionkit-ready"  # warm pool only: the agent completes it once its model is loaded
READY_TIMEOUT = Duration.minutes(30)  # boot (CUDA wheels), model download and load; past it the launch is abandoned
ROOT_DEVICE = "/dev/xvda"  # Amazon Linux 2023, which the default DLAMI is built on


class Fleet(Construct):
    """Workers that boot the bundle and run the agent.

    Attributes: `role`, `log_group`, `launch_template`, `group`, `group_name`, `lifecycle_hook_name`, `launch_hook_name`
    (None without a warm pool), `agent_config` and `agent_config_json` (what every worker runs with; tokens
    resolve at deploy time).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        network: Network,
        bundle: s3_assets.Asset,
        agent_config: dict[str, Any],
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.group_name = f"{settings.stack_name}-workers"
        self.lifecycle_hook_name = LIFECYCLE_HOOK_NAME
        self.launch_hook_name = LAUNCH_HOOK_NAME if settings.warm_pool else None
        self.log_group = logs.LogGroup(self, "Logs", removal_policy=RemovalPolicy.DESTROY, encryption_key=log_key)
        self.log_group.node.default_child.retention_in_days = settings.log_retention_days
        self.agent_config = {
            **agent_config,
            "asg_name": self.group_name,
            "lifecycle_hook_name": self.lifecycle_hook_name,
            "log_group": self.log_group.log_group_name,
            **({"launch_hook_name": LAUNCH_HOOK_NAME} if settings.warm_pool else {}),
        }
        self.agent_config_json = json.dumps(self.agent_config, separators=(",", ":"))
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="CaptionKit GPU worker: models, images, jobs queue, logs, drain",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadRuntimeBundle",
                actions=["s3:GetObject"],
                resources=[bundle.bucket.arn_for_objects(bundle.s3_object_key)],
            )
        )
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            machine_image=_machine_image(settings),
            # a warm pool needs a plain launch template with its one on-demand type (settings refuse the rest)
            instance_type=ec2.InstanceType(settings.instance_types[0]) if settings.warm_pool else None,
            role=self.role,
            security_group=network.security_group,
            user_data=boot_user_data(
                bundle,
                agent_config_json=self.agent_config_json,
                torch_index_url=settings.torch_index_url,
                region=settings.region,
            ),
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            detailed_monitoring=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name=ROOT_DEVICE,
                    volume=ec2.BlockDeviceVolume.ebs(
                        settings.root_volume_gb,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        encrypted=True,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        self.group = autoscaling.AutoScalingGroup(
            self,
            "Group",
            vpc=network.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            auto_scaling_group_name=self.group_name,
            min_capacity=settings.min_capacity,
            max_capacity=settings.max_capacity,
            **_launch_options(settings, self.launch_template),
            capacity_rebalance=settings.spot,
            group_metrics=[autoscaling.GroupMetrics.all()],
            cooldown=Duration.minutes(5),
        )
        self.group.add_lifecycle_hook(
            "Drain",
            lifecycle_hook_name=self.lifecycle_hook_name,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_TERMINATING,
            heartbeat_timeout=Duration.seconds(settings.visibility_timeout_s),
            default_result=autoscaling.DefaultResult.CONTINUE,
        )
        if settings.warm_pool:
            self._add_warm_pool(settings)
        Validations.of(self.group).acknowledge(
            Acknowledgment(
                id="AwsSolutions-EC26",
                reason="The root volume is encrypted in the launch template (Encrypted: true, asserted by "
                "tests/stacks/test_stack_fleet.py); cdk-nag 3.0.2's EC26 reads only a group's LaunchTemplate "
                "property and throws on a MixedInstancesPolicy group, which is what reports this finding.",
            ),
            Acknowledgment(
                id="AwsSolutions-AS3",
                reason="A scale-to-zero fleet launches and terminates instances as routine; each is in the group's "
                "activity history, and a fleet that cannot launch shows as the oldest-message alarm, which notifies.",
            ),
        )

    def _add_warm_pool(self, settings: Settings) -> None:
        """`warm_pool_size` stopped, prepared instances; scale-in returns workers to the pool (after the drain)."""
        self.group.add_lifecycle_hook(
            "Ready",
            lifecycle_hook_name=LAUNCH_HOOK_NAME,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_LAUNCHING,
            heartbeat_timeout=READY_TIMEOUT,
            default_result=autoscaling.DefaultResult.ABANDON,
        )
        # MinSize = MaxGroupPreparedCapacity: a pool of exactly that many, whatever the group's maximum
        self.group.add_warm_pool(
            min_size=settings.warm_pool_size,
            max_group_prepared_capacity=settings.warm_pool_size,
            pool_state=autoscaling.PoolState.STOPPED,
            reuse_on_scale_in=True,
        )


def _launch_options(settings: Settings, launch_template: ec2.LaunchTemplate) -> dict[str, Any]:
    if settings.warm_pool:
        return {"launch_template": launch_template}
    return {
        "mixed_instances_policy": autoscaling.MixedInstancesPolicy(
            launch_template=launch_template,
            launch_template_overrides=[
                autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(t)) for t in settings.instance_types
            ],
            instances_distribution=autoscaling.InstancesDistribution(
                on_demand_base_capacity=0,
                on_demand_percentage_above_base_capacity=0 if settings.spot else 100,
                spot_allocation_strategy=autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
                on_demand_allocation_strategy=autoscaling.OnDemandAllocationStrategy.PRIORITIZED,
            ),
        )
    }


def _machine_image(settings: Settings) -> ec2.IMachineImage:
    if settings.ami_is_parameter:
        return ec2.MachineImage.from_ssm_parameter(settings.ami, os=ec2.OperatingSystemType.LINUX)
    return ec2.MachineImage.generic_linux({settings.region: settings.ami})
