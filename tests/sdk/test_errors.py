"""AWS errors become messages that say what to do."""

from __future__ import annotations

from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

from ftcloud.errors import AwsError, quota_name, translate_aws_error


def client_error(code: str, message: str, operation: str = "CreateTrainingJob") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def test_access_denied_without_a_parsable_principal_names_action_and_role():
    err = translate_aws_error(client_error("AccessDeniedException", "Access denied"),
                              role_arn="arn:aws:iam::1:role/exec", profile="ml", region="eu-west-1")
    assert isinstance(err, AwsError)
    text = str(err)
    assert "sagemaker:CreateTrainingJob" in text and "arn:aws:iam::1:role/exec" in text
    assert "profile ml" in text and "eu-west-1" in text


def test_quota_name_when_aws_gives_none():
    err = translate_aws_error(client_error("ResourceLimitExceeded", "Limit exceeded"),
                              instance_type="ml.p5.48xlarge", spot=False)
    assert "'ml.p5.48xlarge for training job usage'" in str(err)
    assert quota_name("ml.g5.xlarge", True) == "ml.g5.xlarge for spot training job usage"


def test_validation_message_without_a_path_still_names_the_field():
    err = translate_aws_error(client_error(
        "ValidationException", "MaxWaitTimeInSeconds must be greater than or equal to MaxRuntimeInSeconds"))
    assert "compute.max_wait" in str(err)


def test_credentials_region_and_throttling():
    assert "aws sso login" in str(translate_aws_error(client_error("ExpiredTokenException", "expired")))
    assert "aws configure" in str(translate_aws_error(NoCredentialsError()))
    assert "--region" in str(translate_aws_error(NoRegionError()))
    throttled = translate_aws_error(client_error("ThrottlingException", "Rate exceeded", "ListTrainingJobs"))
    assert "adaptive retries" in str(throttled) and "ListTrainingJobs" in str(throttled)


def test_unknown_errors_keep_the_aws_message():
    err = translate_aws_error(client_error("InternalFailure", "something odd"))
    assert "something odd" in str(err) and "InternalFailure" in str(err)
