"""Monitoring: encrypted topic, alarm thresholds, dashboard."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from ftcloud.endpoints.alarms import rollback_alarm_names
from infra.config import PlatformConfig
from tests.infra.support import CONFIGS, flatten


def test_topic_is_encrypted_tls_only_and_mails_when_asked(synth, template):
    s = synth("full")
    key = next(iter(s.resources("AWS::KMS::Key")))
    template("full").has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}}
    )
    template("full").has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ml-platform@example.com"}
    )
    template("default").resource_count_is("AWS::SNS::Subscription", 0)
    (policy,) = s.resources("AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert any(
        st["Effect"] == "Deny" and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for st in statements
    )
    # That policy replaces SNS's default one: alarms of this account must still be able to publish.
    (alarms,) = [st for st in statements if st.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert alarms["Action"] == "sns:Publish"
    assert flatten(alarms["Condition"]["ArnLike"]["aws:SourceArn"]) == (
        "arn:<AWS::Partition>:cloudwatch:<AWS::Region>:<AWS::AccountId>:alarm:*"
    )


def _alarms(s) -> dict[str, dict]:
    return {
        a["Properties"]["AlarmName"]: a["Properties"] for a in s.resources("AWS::CloudWatch::Alarm").values()
    }


@pytest.mark.parametrize("name", ["full", "imported"])
def test_platform_endpoint_alarms_are_named_as_the_sdk_rolls_back_on(synth, name):
    # deploy to the platform endpoint names rollback_alarm_names(endpoint) in its
    # AutoRollbackConfiguration and skips creating alarms that exist: these must be those.
    endpoint_name = synth(name).one("AWS::SageMaker::Endpoint")["EndpointName"]
    assert set(rollback_alarm_names(endpoint_name)) <= set(_alarms(synth(name)))


def test_platform_endpoint_alarms_follow_the_resource_prefix(tmp_path):
    from infra.app import build_app

    context = {**CONFIGS["endpoint_no_vpc"], "resourcePrefix": "team-a"}
    app, stack = build_app(context, outdir=str(tmp_path), nag=False, cfn_validation=False)
    app.synth()
    template = json.loads((tmp_path / f"{stack.stack_name}.template.json").read_text())
    names = {
        r["Properties"]["AlarmName"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    endpoint_name = PlatformConfig.from_context(context).endpoint_name
    assert endpoint_name == "team-a-endpoint"
    assert set(rollback_alarm_names(endpoint_name)) <= names
    assert "team-a-training-workflow-failures" in names


def test_latency_alarm_is_p99_at_two_seconds_in_microseconds(synth):
    alarm = _alarms(synth("full"))["ftcloud-endpoint-latency-p99"]
    assert alarm["MetricName"] == "ModelLatency" and alarm["Namespace"] == "AWS/SageMaker"
    assert alarm["ExtendedStatistic"] == "p99"
    assert alarm["Threshold"] == 2_000_000
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert {d["Name"] for d in alarm["Dimensions"]} == {"EndpointName", "VariantName"}


def test_5xx_rate_alarm_uses_metric_math_on_invocations(synth):
    alarm = _alarms(synth("full"))["ftcloud-endpoint-5xx-rate"]
    assert alarm["Threshold"] == 0.1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    queries = {q["Id"]: q for q in alarm["Metrics"]}
    assert queries["expr_1"]["Expression"] == "IF(invocations > 0, 100 * errors / invocations, 0)"
    assert queries["errors"]["MetricStat"]["Metric"]["MetricName"] == "Invocation5XXErrors"
    assert queries["invocations"]["MetricStat"]["Metric"]["MetricName"] == "Invocations"


def test_workflow_failure_alarm_and_actions(synth, template):
    s = synth("default")
    alarms = _alarms(s)
    assert set(alarms) == {"ftcloud-training-workflow-failures"}  # no endpoint alarms without an endpoint
    alarm = alarms["ftcloud-training-workflow-failures"]
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    names = {q["MetricStat"]["Metric"]["MetricName"] for q in alarm["Metrics"] if "MetricStat" in q}
    assert names == {"ExecutionsFailed", "ExecutionsTimedOut"}
    topic = next(iter(s.resources("AWS::SNS::Topic")))
    for a in _alarms(synth("full")).values():
        assert a["AlarmActions"] == [{"Ref": topic}] and a["OKActions"] == [{"Ref": topic}]
    template("full").resource_count_is("AWS::CloudWatch::Alarm", 3)
    template("full").has_resource_properties(
        "AWS::CloudWatch::Alarm", {"TreatMissingData": Match.exact("notBreaching")}
    )


def test_dashboard_graphs_latency_traffic_errors_instances_and_utilisation(synth):
    s = synth("full")
    body = json.loads(flatten(s.one("AWS::CloudWatch::Dashboard")["DashboardBody"]))
    titles = {w["properties"].get("title") for w in body["widgets"]}
    assert {
        "Model latency (s)",
        "Invocations",
        "Errors",
        "Instances",
        "GPU utilisation (%)",
        "CPU / memory utilisation (%)",
        "Workflow executions",
        "Training GPU utilisation (%)",
        "Alarms",
    } <= titles
    assert s.one("AWS::CloudWatch::Dashboard")["DashboardName"] == "ftcloud-platform"
