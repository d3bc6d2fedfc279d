"""The jobs queue: fed by S3 events on the input prefix only, a dead-letter queue, SSL only, encrypted."""

from aws_cdk.assertions import Match, Template

from stacks.synth import synthesize


def test_jobs_queue_redrives_to_the_dead_letter_queue_after_the_receive_limit(template, synthesized):
    settings = synthesized.stack.settings
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "VisibilityTimeout": settings.visibility_timeout_s,
            "ReceiveMessageWaitTimeSeconds": 20,
            "RedrivePolicy": {"deadLetterTargetArn": Match.any_value(), "maxReceiveCount": settings.max_receive_count},
        },
    )


def test_receive_limit_and_visibility_timeout_follow_the_settings():
    template = Template.from_json(synthesize((("max_receive_count", "9"), ("visibility_timeout_s", "1200"))).template)
    template.has_resource_properties(
        "AWS::SQS::Queue", {"VisibilityTimeout": 1200, "RedrivePolicy": Match.object_like({"maxReceiveCount": 9})}
    )


def test_every_queue_is_encrypted_and_refuses_requests_without_tls(template):
    queues = template.find_resources("AWS::SQS::Queue")  # jobs, its dead letters, the wake-up's failed events
    assert len(queues) == 3 and all(q["Properties"]["SqsManagedSseEnabled"] for q in queues.values())
    policies = template.find_resources("AWS::SQS::QueuePolicy")
    assert len(policies) == 3
    for policy in policies.values():
        deny = policy["Properties"]["PolicyDocument"]["Statement"][0]
        assert (deny["Effect"], deny["Action"], deny["Principal"]) == ("Deny", "sqs:*", {"AWS": "*"})
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_only_the_images_bucket_may_send_to_the_jobs_queue(template):
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "s3.amazonaws.com"},
                            "Action": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
                            "Condition": {
                                "ArnLike": {
                                    "aws:SourceArn": {"Fn::GetAtt": [Match.string_like_regexp("Images"), "Arn"]}
                                }
                            },
                            "Resource": Match.any_value(),
                        }
                    ]
                )
            }
        },
    )


def test_objects_created_under_the_input_prefix_with_an_image_suffix_become_jobs(synthesized):
    settings = synthesized.stack.settings
    [notifications] = [
        r["Properties"]
        for r in synthesized.template["Resources"].values()
        if r["Type"] == "Custom::S3BucketNotifications"
    ]
    configs = notifications["NotificationConfiguration"]["QueueConfigurations"]
    filters = sorted((rule["Name"], rule["Value"]) for c in configs for rule in c["Filter"]["Key"]["FilterRules"])
    assert [v for n, v in filters if n == "suffix"] == sorted(settings.image_suffixes)
    assert {v for n, v in filters if n == "prefix"} == {settings.images_prefix}
    assert all(c["Events"] == ["s3:ObjectCreated:*"] for c in configs)
    assert {c["QueueArn"]["Fn::GetAtt"][0] for c in configs} == {
        synthesized.stack.resolve(synthesized.stack.jobs.queue.queue_arn)["Fn::GetAtt"][0]
    }
    assert not any(settings.results_prefix in str(c) for c in configs)
