"""The endpoint alarms blue/green updates roll back on: p99 model latency and the 5XX error rate.

One definition for the thresholds and the names, shared by the SDK (which creates the alarms for
the endpoints it deploys) and ``infra/monitoring.py`` (which creates them for the platform's own
endpoint). Names follow ``<endpoint>-latency-p99`` / ``<endpoint>-5xx-rate``: the platform's
endpoint is ``<resourcePrefix>-endpoint`` and its alarms ``<resourcePrefix>-endpoint-latency-p99``
and ``<resourcePrefix>-endpoint-5xx-rate``, so deploying to it finds the platform's own alarms
(and leaves them alone). Import-light: plain data, no boto3.
"""

from __future__ import annotations

from typing import Any

#: SageMaker reports ModelLatency in microseconds: 2,000,000 us = 2 s.
LATENCY_P99_THRESHOLD_US = 2_000_000
#: 5XX responses as a percentage of invocations.
ERROR_RATE_THRESHOLD_PERCENT = 0.1
#: Tag on alarms ftcloud created for an endpoint; undeploy deletes only alarms carrying it.
CREATED_BY_TAG = ("ftcloud:created-by", "deploy")

_NAMESPACE = "AWS/SageMaker"


def rollback_alarm_names(endpoint: str) -> list[str]:
    """The two alarm names for ``endpoint`` (latency first)."""
    return [f"{endpoint}-latency-p99", f"{endpoint}-5xx-rate"]


def rollback_alarm_requests(endpoint: str, variant: str, topic_arn: str | None = None) -> list[dict[str, Any]]:
    """PutMetricAlarm requests for ``endpoint``'s rollback alarms (same thresholds as the platform's)."""
    dims = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
    actions = {"AlarmActions": [topic_arn], "OKActions": [topic_arn]} if topic_arn else {}
    tags = [{"Key": CREATED_BY_TAG[0], "Value": CREATED_BY_TAG[1]}, {"Key": "ftcloud:endpoint", "Value": endpoint}]
    latency, errors = rollback_alarm_names(endpoint)

    def stat(id_: str, metric: str) -> dict[str, Any]:
        return {
            "Id": id_,
            "MetricStat": {"Metric": {"Namespace": _NAMESPACE, "MetricName": metric, "Dimensions": dims},
                           "Period": 300, "Stat": "Sum"},
            "ReturnData": False,
        }

    return [
        {
            "AlarmName": latency,
            "AlarmDescription": f"Endpoint {endpoint}: p99 ModelLatency >= 2 s (the metric is in microseconds). "
                                "Blue/green updates roll back when it fires.",
            "Namespace": _NAMESPACE,
            "MetricName": "ModelLatency",
            "Dimensions": dims,
            "ExtendedStatistic": "p99",
            "Period": 60,
            "EvaluationPeriods": 5,
            "DatapointsToAlarm": 3,
            "Threshold": float(LATENCY_P99_THRESHOLD_US),
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            **actions,
            "Tags": tags,
        },
        {
            "AlarmName": errors,
            "AlarmDescription": f"Endpoint {endpoint}: 5XX responses >= {ERROR_RATE_THRESHOLD_PERCENT}% of "
                                "invocations. Blue/green updates roll back when it fires.",
            "Metrics": [
                stat("errors", "Invocation5XXErrors"),
                stat("invocations", "Invocations"),
                {"Id": "rate", "Expression": "IF(invocations > 0, 100 * errors / invocations, 0)",
                 "Label": "5XX error rate (%)", "ReturnData": True},
            ],
            "EvaluationPeriods": 3,
            "DatapointsToAlarm": 2,
            "Threshold": ERROR_RATE_THRESHOLD_PERCENT,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            **actions,
            "Tags": tags,
        },
    ]
