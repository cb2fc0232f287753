"""Optional networking: private subnets, a security group, an S3 gateway endpoint."""

from __future__ import annotations

from aws_cdk.assertions import Match

from tests.infra.support import flatten


def test_no_vpc_by_default(synth):
    s = synth("default")
    assert not s.resources("AWS::EC2::VPC") and not s.resources("AWS::EC2::SecurityGroup")
    assert "SubnetIds" not in s.template["Outputs"] and "SecurityGroupIds" not in s.template["Outputs"]


def test_created_vpc_has_private_subnets_s3_endpoint_flow_logs_and_a_job_security_group(synth, template):
    s = synth("full")
    t = template("full")
    t.resource_count_is("AWS::EC2::VPC", 1)
    t.has_resource_properties("AWS::EC2::VPC", {"CidrBlock": "10.42.0.0/16"})
    private = [
        k
        for k, v in s.resources("AWS::EC2::Subnet").items()
        if v["Properties"]["MapPublicIpOnLaunch"] is False
    ]
    assert len(private) == 2  # one per AZ
    t.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {"VpcEndpointType": "Gateway", "ServiceName": Match.any_value()},
    )
    endpoint = s.one("AWS::EC2::VPCEndpoint")
    assert flatten(endpoint["ServiceName"]) == "com.amazonaws.<AWS::Region>.s3"
    t.has_resource_properties("AWS::EC2::FlowLog", {"LogDestinationType": "s3", "TrafficType": "ALL"})
    t.resource_count_is("AWS::EC2::NatGateway", 1)
    subnets = s.template["Outputs"]["SubnetIds"]["Value"]
    assert sorted(flatten(subnets).split(",")) == sorted(f"<{k}>" for k in private)


def test_without_nat_the_subnets_are_isolated():
    # The construct alone, in a bare stack: cheaper than another full configuration.
    from aws_cdk import App, Stack
    from aws_cdk import aws_s3 as s3
    from aws_cdk.assertions import Template

    from infra.network import PlatformNetwork

    stack = Stack(App(builtin_cloud_formation_validation=False), "Net")
    PlatformNetwork(
        stack, "Network", mode="create", flow_logs_bucket=s3.Bucket(stack, "Logs"), nat_gateways=0
    )
    t = Template.from_stack(stack)
    t.resource_count_is("AWS::EC2::NatGateway", 0)
    t.resource_count_is("AWS::EC2::InternetGateway", 0)
    t.resource_count_is("AWS::EC2::Subnet", 2)
    t.has_resource_properties("AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"})


def test_security_group_allows_members_and_https_only(synth):
    s = synth("full")
    sg = s.one("AWS::EC2::SecurityGroup")
    assert sg["SecurityGroupEgress"] == [
        {"CidrIp": "0.0.0.0/0", "Description": "HTTPS", "FromPort": 443, "IpProtocol": "tcp", "ToPort": 443}
    ]
    (ingress,) = s.resources("AWS::EC2::SecurityGroupIngress").values()
    (egress,) = s.resources("AWS::EC2::SecurityGroupEgress").values()
    sg_id = next(iter(s.resources("AWS::EC2::SecurityGroup")))
    for rule in (ingress["Properties"], egress["Properties"]):
        assert rule["IpProtocol"] == "-1"
        peer = rule.get("SourceSecurityGroupId") or rule.get("DestinationSecurityGroupId")
        assert peer == {"Fn::GetAtt": [sg_id, "GroupId"]}


def test_imported_vpc_gets_the_s3_endpoint_on_its_route_tables(synth, template):
    s = synth("imported")
    assert not s.resources("AWS::EC2::VPC")
    template("imported").has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcId": "vpc-0123456789abcdef0",
            "VpcEndpointType": "Gateway",
            "RouteTableIds": ["rtb-0123456789abcdef0", "rtb-0123456789abcdef1"],
        },
    )
    template("imported").has_resource_properties(
        "AWS::EC2::SecurityGroup", {"VpcId": "vpc-0123456789abcdef0"}
    )
    assert s.template["Outputs"]["SubnetIds"]["Value"] == "subnet-0123456789abcdef0,subnet-0123456789abcdef1"
