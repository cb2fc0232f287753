"""Storage: KMS key with rotation; dataset/artifact buckets hardened, logged, with lifecycles."""

from __future__ import annotations

from aws_cdk.assertions import Match

from tests.infra.support import flatten


def test_kms_key_rotates(template):
    template("default").has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    template("default").has_resource_properties("AWS::KMS::Alias", {"AliasName": "alias/ftcloud-platform"})


def _data_buckets(synth):
    buckets = synth.resources("AWS::S3::Bucket")
    return {k: v["Properties"] for k, v in buckets.items() if "AccessLogs" not in k}


def test_data_buckets_are_kms_encrypted_private_versioned_and_logged(synth):
    s = synth("default")
    buckets = _data_buckets(s)
    assert sorted(k[: -len("0D6E0B3D")] for k in buckets) == ["StorageArtifacts", "StorageDatasets"]
    logs_bucket = next(k for k in s.resources("AWS::S3::Bucket") if "AccessLogs" in k)
    for props in buckets.values():
        sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert sse["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {"Fn::GetAtt": [_key(s), "Arn"]}
        assert sse["BucketKeyEnabled"] is True
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_bucket}


def _key(s):
    return next(iter(s.resources("AWS::KMS::Key")))


def test_every_bucket_denies_plain_http(synth):
    s = synth("default")
    policies = s.resources("AWS::S3::BucketPolicy")
    assert len(policies) == len(s.resources("AWS::S3::Bucket")) == 3
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            st["Effect"] == "Deny" and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for st in statements
        )


def test_checkpoints_expire_and_old_versions_are_cleaned(template):
    template("default").has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Id": "expire-checkpoints",
                                "Prefix": "ftcloud/checkpoints/",
                                "ExpirationInDays": 30,
                                "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                                "Status": "Enabled",
                            }
                        )
                    ]
                )
            }
        },
    )


def test_data_key_and_registry_are_retained_unless_asked(synth):
    kept = synth("default").template["Resources"]
    dropped = synth("imported").template["Resources"]  # retainData=false
    for resources, policy in ((kept, "Retain"), (dropped, "Delete")):
        for res in resources.values():
            if res["Type"] in ("AWS::S3::Bucket", "AWS::KMS::Key", "AWS::SageMaker::ModelPackageGroup"):
                assert res["DeletionPolicy"] == policy


def test_cloudwatch_may_use_the_key_for_the_alarm_topic(synth):
    key = synth("default").one("AWS::KMS::Key")
    principals = [flatten(st["Principal"].get("Service", "")) for st in key["KeyPolicy"]["Statement"]]
    assert "cloudwatch.amazonaws.com" in principals
    assert "logs.<AWS::Region>.amazonaws.com" in principals
