"""cdk-nag (3.x) wiring: run AwsSolutions on the app, record acknowledgments, list open findings.

cdk-nag 3 plugs into CDK's policy-validation framework: a finding fails ``synth`` unless the
construct carries ``Validations.of(construct).acknowledge(...)`` for that exact finding id, e.g.
``AwsSolutions-IAM5[Resource::*]``. Each acknowledgment here must carry a specific reason.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, App, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def add_nag_checks(app: App) -> None:
    """Run the AwsSolutions pack on every synth of ``app``; an open finding fails the synth."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one finding (``AwsSolutions-S1`` or ``AwsSolutions-IAM5[Resource::*]``)."""
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))


def acknowledge_iam5(construct: IConstruct, findings: Mapping[str, str]) -> None:
    """Acknowledge wildcard findings (``{"Resource::...": reason}``) on one IAM policy."""
    for finding, reason in findings.items():
        acknowledge(construct, f"AwsSolutions-IAM5[{finding}]", reason)


def nag_arn(stack: Stack, arn: str) -> str:
    """An ARN as cdk-nag prints it in finding ids: pseudo parameters and attributes in brackets,
    e.g. ``arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/x:*`` or
    ``<Bucket1234.Arn>/*``."""
    resolved = stack.resolve(arn)
    parts = resolved["Fn::Join"][1] if isinstance(resolved, dict) and "Fn::Join" in resolved else [resolved]
    out = []
    for part in parts:
        if isinstance(part, dict) and "Ref" in part:
            out.append(f"<{part['Ref']}>")
        elif isinstance(part, dict) and "Fn::GetAtt" in part:
            out.append(f"<{'.'.join(part['Fn::GetAtt'])}>")
        else:
            out.append(str(part))
    return "".join(out)


def open_findings(scope: IConstruct) -> list[str]:
    """Unacknowledged AwsSolutions findings under ``scope`` as ``"rule at path: description"``.

    The same check the synth-time plugin runs, returned instead of raised (for tests and tools).
    """
    report = AwsSolutionsChecks(scope).validate_scope(scope)
    findings = []
    for violation in report.violations:
        for resource in violation.violating_resources:
            where = resource.construct_path or resource.resource_logical_id
            findings.append(f"{violation.rule_name} at {where}: {violation.description}")
    return sorted(findings)
