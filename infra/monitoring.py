"""Monitoring: the encrypted alarm topic, alarms for the endpoint and the workflow, a dashboard."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

# One definition with the SDK, which creates the same rollback alarms for the endpoints it deploys
# (``<endpoint>-latency-p99`` / ``<endpoint>-5xx-rate``, the names this construct gives the platform's).
from ftcloud.endpoints.alarms import (
    ERROR_RATE_THRESHOLD_PERCENT,
    LATENCY_P99_THRESHOLD_US,
    rollback_alarm_names,
)

_ENDPOINT_NS = "AWS/SageMaker"
_ENDPOINT_INSTANCE_NS = "/aws/sagemaker/Endpoints"
_TRAINING_NS = "/aws/sagemaker/TrainingJobs"
_MINUTE = Duration.minutes(1)
_FIVE_MINUTES = Duration.minutes(5)


class PlatformMonitoring(Construct):
    """An SNS topic encrypted with the platform key (optionally e-mailed), alarms that publish to
    it, and one dashboard. Call :meth:`watch_training` and :meth:`watch_endpoint` to add the
    alarms and widgets for each part of the platform."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        resource_prefix: str,
        key: kms.IKey,
        dashboard_name: str,
        alarm_email: str = "",
    ) -> None:
        super().__init__(scope, id)
        self._prefix = resource_prefix
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"{resource_prefix} platform alarms",
            master_key=key,
            enforce_ssl=True,
        )
        # The topic policy CDK writes (TLS only) replaces SNS's default one, so CloudWatch alarms
        # need their own allow: only alarms of this account may publish.
        stack = Stack.of(self)
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name="*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    },
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            )
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self._action = cw_actions.SnsAction(self.topic)
        self.alarms: list[cw.Alarm] = []
        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=dashboard_name)

    def _alarm(self, id: str, name: str, **props) -> cw.Alarm:
        """An alarm named ``name`` (already prefixed) that notifies the topic on ALARM and OK."""
        alarm = cw.Alarm(self, id, alarm_name=name, **props)
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms.append(alarm)
        return alarm

    def watch_training(self, state_machine: sfn.IStateMachine) -> cw.Alarm:
        """Alarm on any failed or timed-out workflow execution; graph runs and training GPU use."""
        failures = cw.MathExpression(
            expression="FILL(failed, 0) + FILL(timedOut, 0)",
            using_metrics={
                "failed": state_machine.metric_failed(period=_FIVE_MINUTES, statistic="Sum"),
                "timedOut": state_machine.metric_timed_out(period=_FIVE_MINUTES, statistic="Sum"),
            },
            label="Failed or timed-out executions",
            period=_FIVE_MINUTES,
        )
        alarm = self._alarm(
            "WorkflowFailures",
            f"{self._prefix}-training-workflow-failures",
            alarm_description="A fine-tuning workflow execution failed or timed out (see the execution history).",
            metric=failures,
            threshold=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.dashboard.add_widgets(
            cw.TextWidget(markdown="## Training", width=24, height=1),
            cw.GraphWidget(
                title="Workflow executions",
                left=[
                    state_machine.metric_started(statistic="Sum", period=_FIVE_MINUTES),
                    state_machine.metric_succeeded(statistic="Sum", period=_FIVE_MINUTES),
                    state_machine.metric_failed(statistic="Sum", period=_FIVE_MINUTES),
                    state_machine.metric_timed_out(statistic="Sum", period=_FIVE_MINUTES),
                ],
                width=8,
            ),
            *(
                cw.GraphWidget(title=f"Training {label}", left=[_training_search(metric, label)], width=8)
                for metric, label in (
                    ("GPUUtilization", "GPU utilisation (%)"),
                    ("CPUUtilization", "CPU utilisation (%)"),
                )
            ),
        )
        return alarm

    def watch_endpoint(self, endpoint_name: str, variant_name: str) -> list[cw.Alarm]:
        """Alarms on p99 latency and 5XX rate; graphs of latency, traffic, errors, instances, GPU/CPU.

        The alarms are the endpoint's rollback alarms, named ``rollback_alarm_names`` of the
        platform endpoint ``<prefix>-endpoint``: ``endpoint_name`` is the endpoint's attribute (a
        reference, unknown at synth), so the names come from the prefix, as the endpoint's own
        AutoRollbackConfiguration and the SDK's deploy name them.
        """
        dims = {"EndpointName": endpoint_name, "VariantName": variant_name}
        latency_name, error_rate_name = rollback_alarm_names(f"{self._prefix}-endpoint")

        def metric(
            name: str, statistic: str, namespace: str = _ENDPOINT_NS, period: Duration = _MINUTE, **kw
        ):
            return cw.Metric(
                namespace=namespace,
                metric_name=name,
                dimensions_map=dims,
                statistic=statistic,
                period=period,
                **kw,
            )

        latency_p99 = metric("ModelLatency", "p99")
        error_rate = cw.MathExpression(
            expression="IF(invocations > 0, 100 * errors / invocations, 0)",
            using_metrics={
                "errors": metric("Invocation5XXErrors", "Sum", period=_FIVE_MINUTES),
                "invocations": metric("Invocations", "Sum", period=_FIVE_MINUTES),
            },
            label="5XX error rate (%)",
            period=_FIVE_MINUTES,
        )
        alarms = [
            self._alarm(
                "LatencyP99",
                latency_name,
                alarm_description="Endpoint p99 ModelLatency >= 2 s (the metric is in microseconds).",
                metric=latency_p99,
                threshold=LATENCY_P99_THRESHOLD_US,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=5,
                datapoints_to_alarm=3,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            self._alarm(
                "ErrorRate5xx",
                error_rate_name,
                alarm_description="Endpoint 5XX responses >= 0.1% of invocations.",
                metric=error_rate,
                threshold=ERROR_RATE_THRESHOLD_PERCENT,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        ]
        seconds = {
            name: cw.MathExpression(
                expression=f"{name} / 1000000",
                using_metrics={name: metric("ModelLatency", stat)},
                label=f"ModelLatency {stat} (s)",
                period=_MINUTE,
            )
            for name, stat in (("p50", "p50"), ("p99", "p99"))
        }
        self.dashboard.add_widgets(
            cw.TextWidget(markdown=f"## Endpoint {endpoint_name}", width=24, height=1),
            cw.GraphWidget(
                title="Model latency (s)",
                left=[seconds["p50"], seconds["p99"]],
                left_annotations=[
                    cw.HorizontalAnnotation(value=LATENCY_P99_THRESHOLD_US / 1e6, label="p99 alarm")
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Invocations",
                left=[metric("Invocations", "Sum"), metric("InvocationsPerInstance", "Sum")],
                width=8,
            ),
            cw.GraphWidget(
                title="Errors",
                left=[metric("Invocation4XXErrors", "Sum"), metric("Invocation5XXErrors", "Sum")],
                right=[error_rate],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Instances",
                # Each instance reports CPUUtilization once a minute: the sample count is the fleet size.
                left=[
                    metric(
                        "CPUUtilization", "SampleCount", namespace=_ENDPOINT_INSTANCE_NS, label="instances"
                    )
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="GPU utilisation (%)",
                left=[
                    metric("GPUUtilization", "Average", namespace=_ENDPOINT_INSTANCE_NS),
                    metric("GPUMemoryUtilization", "Average", namespace=_ENDPOINT_INSTANCE_NS),
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="CPU / memory utilisation (%)",
                left=[
                    metric("CPUUtilization", "Average", namespace=_ENDPOINT_INSTANCE_NS),
                    metric("MemoryUtilization", "Average", namespace=_ENDPOINT_INSTANCE_NS),
                ],
                width=8,
            ),
        )
        return alarms

    def add_alarm_status(self) -> None:
        """One widget with the state of every alarm (call after the watch_* methods)."""
        self.dashboard.add_widgets(cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms), width=24))


def _training_search(metric_name: str, label: str) -> cw.MathExpression:
    # Training hosts are dimensioned by "<job name>/algo-N", unknown at deploy time: search for them.
    return cw.MathExpression(
        expression=f"SEARCH('{{{_TRAINING_NS},Host}} MetricName=\"{metric_name}\"', 'Average', 60)",
        using_metrics={},
        label=label,
        period=_MINUTE,
    )
