"""Optional networking: private subnets, a security group and an S3 gateway endpoint."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct


class PlatformNetwork(Construct):
    """Where training jobs and the endpoint run when a VPC is configured.

    ``mode="create"`` builds a VPC whose training subnets have no internet route unless NAT
    gateways are asked for, with an S3 gateway endpoint (data never leaves the AWS network) and
    flow logs to the access-log bucket. ``mode="import"`` uses existing private subnets and adds
    the S3 gateway endpoint to the given route tables. Either way one security group is created:
    members may talk to each other (multi-node training: NCCL/EFA) and reach HTTPS, nothing else.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        mode: str,
        flow_logs_bucket: s3.IBucket,
        cidr: str = "10.42.0.0/16",
        max_azs: int = 2,
        nat_gateways: int = 0,
        vpc_id: str = "",
        subnet_ids: Sequence[str] = (),
        route_table_ids: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, id)
        if mode == "create":
            private_type = (
                ec2.SubnetType.PRIVATE_WITH_EGRESS if nat_gateways else ec2.SubnetType.PRIVATE_ISOLATED
            )
            subnets = [ec2.SubnetConfiguration(name="training", subnet_type=private_type, cidr_mask=20)]
            if nat_gateways:
                subnets.insert(
                    0, ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
                )
            self.vpc: ec2.IVpc = ec2.Vpc(
                self,
                "Vpc",
                ip_addresses=ec2.IpAddresses.cidr(cidr),
                max_azs=max_azs,
                nat_gateways=nat_gateways,
                subnet_configuration=subnets,
                gateway_endpoints={
                    "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
                },
                flow_logs={
                    "ToS3": ec2.FlowLogOptions(
                        destination=ec2.FlowLogDestination.to_s3(flow_logs_bucket, "vpc-flow-logs/"),
                        traffic_type=ec2.FlowLogTrafficType.ALL,
                    )
                },
                # Nothing here uses the default security group; locking it down needs a custom-resource
                # Lambda (with its own managed-policy role) that this stack otherwise avoids.
                restrict_default_security_group=False,
            )
            self.subnet_ids = self.vpc.select_subnets(subnet_type=private_type).subnet_ids
        elif mode == "import":
            # from_vpc_attributes needs AZs only to select subnets, which we never do: the subnets are
            # given. A token list keeps the synth free of account look-ups.
            self.vpc = ec2.Vpc.from_vpc_attributes(
                self, "Vpc", vpc_id=vpc_id, availability_zones=Stack.of(self).availability_zones
            )
            self.subnet_ids = list(subnet_ids)
            if route_table_ids:
                subnets = [
                    ec2.Subnet.from_subnet_attributes(
                        self, f"Subnet{i}", subnet_id=subnet, route_table_id=table
                    )
                    for i, (subnet, table) in enumerate(zip(subnet_ids, route_table_ids, strict=True))
                ]
                ec2.GatewayVpcEndpoint(
                    self,
                    "S3Endpoint",
                    vpc=self.vpc,
                    service=ec2.GatewayVpcEndpointAwsService.S3,
                    subnets=[ec2.SubnetSelection(subnets=subnets)],
                )
        else:
            raise ValueError(f"unknown VPC mode {mode!r}")

        self.security_group = ec2.SecurityGroup(
            self,
            "Jobs",
            vpc=self.vpc,
            description="ftcloud training jobs and endpoint",
            allow_all_outbound=False,
        )
        # Distributed training: every port between members (NCCL, EFA, torch.distributed rendezvous).
        self.security_group.add_ingress_rule(
            self.security_group, ec2.Port.all_traffic(), "between job members"
        )
        self.security_group.add_egress_rule(
            self.security_group, ec2.Port.all_traffic(), "between job members"
        )
        # HTTPS: S3 via the gateway endpoint, AWS APIs, and the Hugging Face Hub when NAT is present.
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS")

    @property
    def security_group_ids(self) -> list[str]:
        return [self.security_group.security_group_id]

    def grant_network_interfaces(self, grantee: iam.IGrantable) -> None:
        """What SageMaker needs to attach jobs/endpoints to these subnets (ENIs), scoped to this VPC."""
        stack = Stack.of(self)
        vpc_arn = stack.format_arn(service="ec2", resource="vpc", resource_name=self.vpc.vpc_id)
        network_interfaces = stack.format_arn(service="ec2", resource="network-interface", resource_name="*")
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:CreateNetworkInterfacePermission",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DeleteNetworkInterfacePermission",
                ],
                resources=[network_interfaces],
                conditions={"ArnEquals": {"ec2:Vpc": vpc_arn}},
            )
        )
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ec2:CreateNetworkInterface"],
                resources=[
                    *(
                        stack.format_arn(service="ec2", resource="subnet", resource_name=s)
                        for s in self.subnet_ids
                    ),
                    stack.format_arn(
                        service="ec2",
                        resource="security-group",
                        resource_name=self.security_group.security_group_id,
                    ),
                ],
            )
        )
        # Describe* calls have no resource-level permissions (see the acknowledgment in iam.py).
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeDhcpOptions",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                ],
                resources=["*"],
            )
        )
