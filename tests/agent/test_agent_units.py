"""Unit tests of the agent's pieces: settings, message parsing, result records, device choice, metrics."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import botocore.exceptions
import pytest

from agent_support import REPO
from runtime.agent.config import ConfigError, load_config
from runtime.agent.layout import is_own_result, part_key, part_marker, result_key, shard_output, started_marker
from runtime.agent.messages import ImageRef, UnknownMessage, parse_body, parse_s3_uri
from runtime.agent.metrics import JsonFormatter, embedded_metrics
from runtime.agent.results import render
from runtime.agent.scope import Scope
from runtime.aws import Replaced, RetryLater, classify_read_error
from runtime.errors import BadImage, DeviceError
from runtime.load_policy import choose_device


def test_environment_overrides_the_config_file(tmp_path):
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"queue_url": "file-queue", "batch_size": 16, "image_suffixes": [".png"]}))
    config = load_config(
        path,
        {
            "CAPTIONKIT_QUEUE_URL": "env-queue",
            "CAPTIONKIT_IMAGE_SUFFIXES": ".jpg, .webp",
            "CAPTIONKIT_VISIBILITY_TIMEOUT_S": "300",
        },
    )
    assert (config.queue_url, config.batch_size, config.image_suffixes) == ("env-queue", 16, (".jpg", ".webp"))
    assert config.visibility_timeout_s == 300 and config.model_pointer == "models/current.json"


def test_environment_alone_is_enough():
    config = load_config(None, {"CAPTIONKIT_QUEUE_URL": "q", "CAPTIONKIT_IMAGES_BUCKET": "pics"})
    assert config.results_bucket_name == "pics" and config.results_prefix == "results/"


@pytest.mark.parametrize(
    "settings, env, message",
    [
        ({"queue_ur": "typo"}, {}, "unknown settings ['queue_ur']"),
        ({"batch_size": "eight"}, {}, "not a valid int for batch_size"),
        ({}, {"CAPTIONKIT_DEVICE": "tpu"}, "device must be auto, cpu or cuda"),
        ({"quantize": "int4"}, {}, "quantize must be empty, int8 or fp16"),
        ({"quantize": "int8", "backend": "aoti"}, {}, "quantize=int8 is for the exported backend on CPU"),
        ({"quantize": "fp16"}, {"CAPTIONKIT_DEVICE": "cuda"}, "quantize=fp16 is for the exported backend on CPU"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(tmp_path, settings, env, message):
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path, env)


def test_a_missing_setting_names_its_environment_variable():
    with pytest.raises(ConfigError, match="CAPTIONKIT_ARTIFACTS_BUCKET"):
        load_config(None, {}).require("artifacts_bucket")


PICS = Scope("pics", "", ("pics", "results/"))  # the whole bucket but its results


def _event(*records):
    return json.dumps(
        {
            "Records": [
                {"eventName": name, "s3": {"bucket": {"name": "pics"}, "object": {"key": key}}} for name, key in records
            ]
        }
    )


def test_s3_event_keys_are_url_decoded_and_several_records_read():
    work = parse_body(
        _event(
            ("ObjectCreated:Put", "incoming/a+cat%2B%C3%A9.jpg"),
            ("ObjectCreated:CompleteMultipartUpload", "incoming/b.png"),
        ),
        PICS,
    )
    assert work.images == (ImageRef("pics", "incoming/a cat+é.jpg"), ImageRef("pics", "incoming/b.png"))


def test_test_events_removals_folders_and_own_results_make_no_work():
    assert parse_body(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}), PICS).images == ()
    work = parse_body(
        _event(
            ("ObjectRemoved:Delete", "incoming/a.jpg"),
            ("ObjectCreated:Put", "incoming/dir/"),
            ("ObjectCreated:Put", "results/incoming/a.jpg.json"),
        ),
        PICS,
    )
    assert work.images == () and "ObjectRemoved:Delete" in work.note and "result object" in work.note


def test_s3_events_delivered_through_sns_are_unwrapped():
    work = parse_body(json.dumps({"Type": "Notification", "Message": _event(("ObjectCreated:Put", "x.png"))}), PICS)
    assert work.images == (ImageRef("pics", "x.png"),)


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '{"what": "ever"}',
        '{"Records": [{"s3": {}}]}',
        '{"type": "captionkit.job", "job_id": "j"}',
        '{"type": "captionkit.chunk", "job_id": "j"}',
        '{"type": "captionkit.shard", "job_id": "j"}',
    ],
)
def test_unknown_bodies_raise_unknown_message(body):
    with pytest.raises(UnknownMessage):
        parse_body(body, PICS)


def test_jobs_and_parts_are_parsed():
    job = parse_body(json.dumps({"type": "captionkit.job", "job_id": "j-1", "prefix": "s3://pics/2024/"}), PICS)
    assert (job.job["kind"], job.job["source"], job.job["images"]) == ("images", "s3://pics/2024/", None)
    listed = parse_body(
        json.dumps({"type": "captionkit.job", "job_id": "j-1", "run": "r-2", "images": ["s3://pics/2024/a?b#c.png"]}),
        PICS,
    )
    assert (listed.job["run"], listed.job["images"]) == ("r-2", ["s3://pics/2024/a?b#c.png"])
    part = parse_body(
        json.dumps({"type": "captionkit.shard", "job_id": "j-1", "index": 2, "count": 3, "run": "r-2"}), PICS
    )
    assert (part.shard.index, part.shard.count, part.shard.run, part.images) == (2, 3, "r-2", ())
    assert parse_s3_uri("s3://b/k/with?odd#chars") == ("b", "k/with?odd#chars")


class _Item:
    def __init__(self, **fields):
        self.ref, self.version_id, self.etag, self.size = ImageRef("pics", "incoming/a.jpg"), None, "e1", 10
        self.caption, self.error = None, None
        self.__dict__.update(fields)


class _Model:
    name, sha256 = "demo", "ab" * 32


def test_result_records_are_deterministic_and_hold_source_and_model():
    ok = render(_Item(caption="a red square"), _Model())
    assert ok == render(_Item(caption="a red square"), _Model())
    record = json.loads(ok)
    assert record["status"] == "ok" and record["caption"] == "a red square"
    assert record["source"] == {"bucket": "pics", "key": "incoming/a.jpg", "version_id": None, "etag": "e1", "size": 10}
    assert record["model"] == {"name": "demo", "sha256": "ab" * 32} and "time" not in ok.decode()
    error = json.loads(render(_Item(error="empty"), _Model()))
    assert error["status"] == "error" and error["error"] == "empty" and "caption" not in error
    assert result_key("results/", "incoming/cat.jpg") == "results/incoming/cat.jpg.json"


def test_read_errors_are_split_into_permanent_and_transient():
    def client_error(code):
        return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")

    for permanent in ["NoSuchKey", "InvalidObjectState", "AccessDenied", "NoSuchBucket", "KeyTooLongError"]:
        assert isinstance(classify_read_error(client_error(permanent), "s3://b/k"), BadImage), permanent
    assert "images prefix" in str(classify_read_error(client_error("AccessDenied"), "s3://b/k"))
    assert isinstance(classify_read_error(client_error("PreconditionFailed"), "s3://b/k"), Replaced)
    for transient in [
        client_error("SlowDown"),
        client_error("ServiceUnavailable"),
        client_error("InternalError"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://s3"),
    ]:
        assert isinstance(classify_read_error(transient, "s3://b/k"), RetryLater)


def test_one_rule_skips_the_agents_own_results():
    assert is_own_result(("pics", "results/"), "pics", "results/a.jpg.json")
    assert not is_own_result(("pics", "results/"), "other", "results/a.jpg.json")
    assert not is_own_result(("pics", "results/"), "pics", "incoming/a.jpg")
    assert not is_own_result(("pics", ""), "pics", "incoming/a.jpg")  # an empty prefix is refused by load_config


def test_an_empty_results_prefix_is_refused():
    with pytest.raises(ConfigError, match="results_prefix must be a key prefix"):
        load_config(environ={"CAPTIONKIT_RESULTS_PREFIX": ""})


def test_a_result_key_too_long_for_s3_goes_under_long_keys():
    long_key = "incoming/" + "x" * 1010
    key = result_key("results/", long_key)
    assert key.startswith("results/_long-keys/") and len(key.encode()) <= 1024
    assert key == result_key("results/", long_key)  # deterministic: a redelivery overwrites the same record


def test_per_index_job_keys_keep_their_folders_six_digit_indexes_and_suffixes():
    root = "results/_jobs/job-1/"
    assert part_marker(root, 7) == "results/_jobs/job-1/chunks/000007.json"
    assert part_key(root, 12) == "results/_jobs/job-1/parts/000012.json"
    assert shard_output(root, 123456) == "results/_jobs/job-1/shards/123456.parquet"
    assert started_marker(root, 0) == "results/_jobs/job-1/started/000000.json"
    assert part_marker(root, 1234567) == "results/_jobs/job-1/chunks/1234567.json"  # wider indexes are not cut


@pytest.mark.parametrize(
    "requested, gpus, available, expected",
    [
        ("cpu", ["GPU 0: A10G"], False, "cpu"),
        ("auto", [], False, "cpu"),
        ("auto", ["GPU 0: A10G"], True, "cuda"),
        ("cuda", ["GPU 0: A10G"], True, "cuda"),
    ],
)
def test_device_choice(requested, gpus, available, expected):
    assert choose_device(requested, gpus, available, "12.8") == expected


@pytest.mark.parametrize(
    "requested, gpus, build, message",
    [
        ("auto", ["GPU 0: NVIDIA A10G"], None, "has a GPU .* but CUDA cannot see it: torch is a CPU-only build"),
        ("auto", ["/dev/nvidia0"], "12.8", "CUDA cannot see it: torch is built for CUDA 12.8; check the driver"),
        ("cuda", [], "12.8", "device is 'cuda' but CUDA is not available: no GPU is visible"),
    ],
)
def test_a_gpu_that_cuda_cannot_see_is_fatal_not_a_cpu_fallback(requested, gpus, build, message):
    with pytest.raises(DeviceError, match=message):
        choose_device(requested, gpus, False, build)


def test_batch_log_lines_are_embedded_metric_format():
    fields = embedded_metrics(
        "CaptionKit",
        {"Queue": "jobs"},
        {"ImagesDone": (3, "Count"), "ImageLatency": ([10.0, 12.5], "Milliseconds"), "QueueWait": ([], "Milliseconds")},
    )
    directive = fields["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "CaptionKit" and directive["Dimensions"] == [["Queue"]]
    assert [m["Name"] for m in directive["Metrics"]] == ["ImagesDone", "ImageLatency"]
    assert fields["Queue"] == "jobs" and fields["ImagesDone"] == 3 and fields["ImageLatency"] == [10.0, 12.5]
    record = logging.LogRecord("captionkit.agent", logging.INFO, "", 0, "batch", (), None)
    record.fields = {"event": "batch", **fields}
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "info" and line["event"] == "batch" and "_aws" in line


def test_the_agent_imports_no_torch_transformers_or_laptop_code():
    laptop_only = ("torch", "transformers", "export", "tools", "demo")
    code = (
        "import sys, runtime, runtime.agent.cli, runtime.agent.submit, runtime.lambdas.wake_on_upload.wake; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {laptop_only!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_json_formatter_keeps_foreign_log_records_readable():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.emit(logging.LogRecord("botocore", logging.WARNING, "", 0, "hello %s", ("x",), None))
    assert json.loads(stream.getvalue()) | {"time": 0} == {
        "time": 0,
        "level": "warning",
        "logger": "botocore",
        "message": "hello x",
    }


def test_the_test_fake_is_a_captioner_as_the_agent_sees_one():
    from agent_support import FakeCaptioner
    from runtime.agent.work import Captioner

    assert isinstance(FakeCaptioner("fake", "ab" * 32), Captioner)
    assert not isinstance(object(), Captioner)


def test_a_dataset_refused_outside_the_images_prefix_names_the_setting_that_allows_it():
    why = Scope("images", "incoming/", ("images", "results/")).dataset_outside("shards", "laion/00000.tar")
    assert "dataset_sources=s3://shards/" in why and "make local-up SETTINGS=" in why
    listed = Scope("images", "incoming/", ("images", "results/"), ("s3://a/b/",)).dataset_outside("c", "d.tar")
    assert "add it to the stack setting dataset_sources" in listed
    assert Scope("images", "incoming/", ("images", "results/")).dataset_outside("images", "incoming/x.tar") is None
