"""The workers' network: a small VPC with no NAT gateway, no inbound access and flow logs."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3
from constructs import Construct


class Network(Construct):
    """Public subnets in two zones (outbound only, for pip and AWS APIs) and an S3 gateway endpoint.

    A NAT gateway would cost about 33 USD a month per zone even with the fleet at zero, so the
    instances get public addresses instead; `security_group` allows no inbound traffic at all.
    Attributes: `vpc`, `security_group`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, flow_log_bucket: s3.IBucket) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.80.0.0/16"),
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="workers", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=20)
            ],
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
            flow_logs={
                "ToS3": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_s3(flow_log_bucket),  # no key prefix: moto rejects one
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
            restrict_default_security_group=False,
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "Workers",
            vpc=self.vpc,
            description="CaptionKit workers: no inbound rules (Session Manager only); outbound for pip and AWS APIs",
            allow_all_outbound=True,
        )
