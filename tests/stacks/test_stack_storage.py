"""Storage: private, encrypted, SSL-only buckets; versioned artifacts whose old model versions expire."""

from aws_cdk.assertions import Match

from stacks.synth import synthesize

PUBLIC_ACCESS_BLOCKED = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


def buckets(template):
    return template.find_resources("AWS::S3::Bucket")


def test_every_bucket_is_encrypted_private_and_kept_on_stack_delete(template):
    found = buckets(template)
    assert len(found) == 3  # artifacts, images (input and results), access logs
    for bucket in found.values():
        properties = bucket["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == PUBLIC_ACCESS_BLOCKED
        assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"][
            "SSEAlgorithm"
        ] in ("AES256", "aws:kms")
        assert "AccessControl" not in properties and "WebsiteConfiguration" not in properties
        assert bucket["DeletionPolicy"] == "Retain"


def test_every_bucket_policy_denies_requests_without_tls(template):
    policies = template.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == len(buckets(template))
    for policy in policies.values():
        deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert len(deny) == 1
        assert deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert (deny[0]["Action"], deny[0]["Principal"], len(deny[0]["Resource"])) == ("s3:*", {"AWS": "*"}, 2)


def test_no_bucket_policy_allows_anyone(template):
    for policy in template.find_resources("AWS::S3::BucketPolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Allow":
                assert "Service" in statement["Principal"], statement
                assert "aws:SourceArn" in str(statement["Condition"]), statement


def test_artifacts_bucket_is_versioned_and_expires_replaced_model_versions(template):
    days = synthesize().stack.settings.model_version_retention_days
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Prefix": "models/",
                                "Status": "Enabled",
                                "NoncurrentVersionExpiration": {"NoncurrentDays": days},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_artifact_and_image_buckets_log_access_to_the_log_bucket(template):
    for prefix in ("artifacts/", "images/"):
        template.has_resource_properties(
            "AWS::S3::Bucket",
            {"LoggingConfiguration": {"DestinationBucketName": Match.any_value(), "LogFilePrefix": prefix}},
        )


def test_images_bucket_is_output_as_both_input_and_results_location(template):
    outputs = synthesize().template["Outputs"]
    assert outputs["ImagesBucket"]["Value"] == outputs["ResultsBucket"]["Value"]
    assert (outputs["ImagesPrefix"]["Value"], outputs["ResultsPrefix"]["Value"]) == ("incoming/", "results/")
