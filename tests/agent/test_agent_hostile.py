"""Hostile messages against moto: forged buckets, forged parts and poison bodies beside good images in one receive."""

from __future__ import annotations

import json
import urllib.parse

from agent_support import AgentProcess, png
from runtime import aws
from runtime.agent import submit


def _record(stack, key: str, bucket: str | None = None) -> dict:
    return {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket or stack.images}, "object": {"key": urllib.parse.quote_plus(key, safe="/")}},
    }


def _objects(stack, prefix: str = "results/") -> dict[str, bytes]:
    """Every object under `prefix` in the images bucket, by key, with all its versions' bytes."""
    reply = stack.s3.list_object_versions(Bucket=stack.images, Prefix=prefix)
    return {
        (v["Key"], v["VersionId"]): stack.s3.get_object(Bucket=stack.images, Key=v["Key"], VersionId=v["VersionId"])[
            "Body"
        ].read()
        for v in reply.get("Versions", [])
    }


def _dead(stack) -> list[dict]:
    return stack.dead_letters()


def _mixed_batches(agent_log) -> list[dict]:
    """Batch log lines where refused messages and captioned images were in the same batch."""
    return [line for line in agent_log.events("batch") if line["refused"] and line["images"]]


def _good_images(stack, names: list[str]) -> list[str]:
    keys = [f"incoming/good/{name}.png" for name in names]
    for n, key in enumerate(keys):
        stack.put(key, png(colour=(n * 30, 90, 10), size=(20 + n, 10)))
    return keys


def test_forged_events_for_another_bucket_or_prefix_write_no_record_and_leave_results_alone(stack, agent_log):
    stack.s3.put_bucket_versioning(Bucket=stack.images, VersioningConfiguration={"Status": "Enabled"})
    stack.put("incoming/cat.png", png())
    stack.send_event("incoming/cat.png")
    assert stack.worker(burst=True).run() == 0
    before = _objects(stack)
    assert [key for key, _ in before] == ["results/incoming/cat.png.json"]
    stack.s3.put_object(Bucket=stack.artifacts, Key="incoming/cat.png", Body=png((1, 2, 3)))  # a real other bucket
    stack.put("elsewhere/cat.png", png((4, 5, 6)))
    forged = [
        {"Records": [_record(stack, "incoming/cat.png", f"no-such-bucket-{stack.id}")]},
        {"Records": [_record(stack, "incoming/cat.png", stack.artifacts)]},
        {"Records": [_record(stack, "elsewhere/cat.png")]},
        {"Records": [_record(stack, "incoming/good/0.png"), _record(stack, "incoming/cat.png", "other")]},
    ]
    good = _good_images(stack, ["0", "1", "2"])
    for n, body in enumerate(forged):
        stack.send(body)
        if n < len(good):
            stack.send_event(good[n])

    worker = stack.worker(burst=True)
    assert worker.run() == 0

    after = _objects(stack)
    assert {k: v for k, v in after.items() if k[0] == "results/incoming/cat.png.json"} == before  # not rewritten
    assert sorted({key for key, _ in after}) == sorted(f"results/{key}.json" for key in ["incoming/cat.png", *good])
    assert all(stack.result(key)["status"] == "ok" for key in good)
    dead = _dead(stack)
    assert sorted(json.loads(m["Body"])["Records"][-1]["s3"]["bucket"]["name"] for m in dead) == sorted(
        [f"no-such-bucket-{stack.id}", stack.artifacts, stack.images, "other"]
    )
    reasons = [m["MessageAttributes"]["captionkit_error"]["StringValue"] for m in dead]
    assert sum("not in the images bucket" in r for r in reasons) == 3
    assert sum("outside the images prefix" in r for r in reasons) == 1
    assert worker.counters.refused == 4 and worker.counters.retried == 0 and _mixed_batches(agent_log)
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def _part(job_id: str, index, count, run) -> dict:
    return {"type": "captionkit.shard", "job_id": job_id, "index": index, "count": count, "run": run}


def test_forged_parts_cannot_rewrite_a_jobs_markers_or_summary_nor_announce_a_job(stack, agent_log):
    sns = aws.client("sns")
    topic = sns.create_topic(Name=f"jobs-done-{stack.id}")["TopicArn"]
    stack.s3.put_bucket_versioning(Bucket=stack.images, VersioningConfiguration={"Status": "Enabled"})
    images = [f"s3://{stack.images}/incoming/job/{n}.png" for n in range(5)]
    for n, uri in enumerate(images):
        stack.put(uri.split("/", 3)[3], png(colour=(n * 40, 0, 0)) if n != 3 else b"not an image")
    config = stack.config(job_topic_arn=topic, job_chunk_size=4)
    stack.send(submit.build_job(images, "job-1", run="20260101-000000-real"))
    assert stack.worker(config, burst=True).run() == 0
    before = _objects(stack)
    summary = json.loads(
        stack.s3.get_object(Bucket=stack.images, Key="results/_jobs/job-1/summary.json")["Body"].read()
    )
    assert (summary["done"], summary["failed"]) == (4, 1) and len(agent_log.events("job_notified")) == 1
    manifest = json.loads(
        stack.s3.get_object(Bucket=stack.images, Key="results/_jobs/job-1/manifest.json")["Body"].read()
    )
    count, run = len(manifest["shards"]), "20260101-000000-real"
    assert count == 2  # parts of 4; the failure is in part 0
    forged = [
        _part("job-1", 0, 1, run),  # count 1 would make one marker look like the whole job
        _part("job-1", 2, count + 1, run),  # a new index
        _part("job-1", 0, count, "20991231-000000-forged"),  # a run no agent queued: it would rewrite the markers
        _part("job-1", True, count, run),
        _part("job-1", 0, float(count), run),
        _part("job-1", "0", count, run),
        _part("ghost", 0, 1, run),  # a job that does not exist would get a summary and an announcement
        _part("../job-1", 0, count, run),
        {"type": "captionkit.chunk", "job_id": "job-1", "index": 0, "count": count, "images": images[:4]},
    ]
    good = _good_images(stack, ["a", "b"])
    for n, body in enumerate(forged):
        stack.send(body)
        if n in (2, 6):
            stack.send_event(good.pop())

    worker = stack.worker(config, burst=True)
    assert worker.run() == 0

    after = _objects(stack, "results/_jobs/")
    assert after == {k: v for k, v in before.items() if k[0].startswith("results/_jobs/")}  # not one byte rewritten
    assert stack.keys("results/_jobs/ghost/") == []
    assert [stack.result(f"incoming/good/{name}.png")["status"] for name in "ab"] == ["ok", "ok"]
    assert len(agent_log.events("job_notified")) == 1  # the real job's only
    dead = _dead(stack)
    assert sorted(m["Body"] for m in dead) == sorted(json.dumps(body) for body in forged)
    assert worker.counters.refused == len(forged) and worker.counters.retried == 0
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def test_a_replayed_part_of_a_finished_run_is_accepted_and_writes_nothing(stack):
    images = [f"s3://{stack.images}/incoming/job/{n}.png" for n in range(3)]
    for n, uri in enumerate(images):
        stack.put(uri.split("/", 3)[3], png(colour=(n * 40, 0, 0)))
    stack.send(submit.build_job(images, "job-2", run="20260101-000000-real"))
    assert stack.worker(burst=True).run() == 0
    before = _objects(stack)
    stack.send(_part("job-2", 0, 1, "20260101-000000-real"))  # exactly what the expanding agent sent

    assert stack.worker(burst=True).run() == 0

    assert _objects(stack) == before
    assert _dead(stack) == [] and stack.counts() == {"visible": 0, "in_flight": 0}


def test_a_job_naming_images_outside_the_images_prefix_is_refused_by_the_agent(stack, agent_log):
    stack.put("elsewhere/a.png", png())
    stack.put("incoming/b.png", png())
    jobs = [
        {"type": "captionkit.job", "job_id": "out-1", "prefix": f"s3://{stack.images}/elsewhere/"},
        {"type": "captionkit.job", "job_id": "out-2", "prefix": f"s3://{stack.images}/"},
        {"type": "captionkit.job", "job_id": "out-3", "prefix": f"s3://{stack.artifacts}/incoming/"},
        {
            "type": "captionkit.job",
            "job_id": "out-4",
            "images": [f"s3://{stack.images}/incoming/b.png", f"s3://{stack.images}/elsewhere/a.png"],
        },
    ]
    for job in jobs:
        stack.send(job)  # straight onto the queue: the submit CLI's own check is not what protects the fleet

    worker = stack.worker(burst=True)
    assert worker.run() == 0

    assert stack.keys() == []  # no manifest, no part, no result
    assert len(_dead(stack)) == len(jobs) and worker.counters.refused == len(jobs)
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def _poison(stack) -> list[str]:
    record = json.dumps(_record(stack, "incoming/good/0.png"))
    return [
        "[" * 3000 + "]" * 3000,
        '{"Records": [' + record.replace('"ObjectCreated:Put"', "5") + "]}",
        '{"Records": [' + record.replace('"incoming/good/0.png"', "7") + "]}",
        '{"Records": [' + record.replace('"incoming/good/0.png"', '"incoming/%FF.png"') + "]}",
        '{"Records": [' + record.replace('"incoming/good/0.png"', '"incoming/\\udc80.png"') + "]}",
        '{"type": "captionkit.shard", "job_id": "j", "index": Infinity, "count": 2, "run": "r"}',
        '{"type": "captionkit.shard", "job_id": "j", "index": 0, "count": NaN, "run": "r"}',
        '{"type": "captionkit.shard", "job_id": "j", "index": ' + "9" * 5000 + ', "count": 1, "run": "r"}',
        '{"Records": [' + ", ".join([record] * 11) + "]}",
        json.dumps({"Records": [_record(stack, "incoming/" + "k" * 300_000)]}),  # over 256 KiB
        json.dumps({"Type": "Notification", "Message": "[" * 3000}),
        "\x00\x01 not json at all \ufffd",
    ]


def test_poison_bodies_settle_alone_and_their_batch_mates_are_captioned(stack, agent_log):
    poison = _poison(stack)
    good = _good_images(stack, [str(n) for n in range(8)])
    for n, body in enumerate(poison):
        stack.send(body)
        if n % 3 == 0:
            stack.send_event(good[n // 3])
    for key in good[len(poison) // 3 :]:
        stack.send_event(key)

    worker = stack.worker(burst=True)
    assert worker.run() == 0

    assert stack.keys() == sorted(f"results/{key}.json" for key in good)
    assert all(stack.result(key)["status"] == "ok" for key in good)
    dead = _dead(stack)
    assert sorted(m["Body"] for m in dead) == sorted(poison)  # every poison body, no innocent one
    assert all(m["MessageAttributes"]["captionkit_error"]["StringValue"] for m in dead)
    assert worker.counters.refused == len(poison) and worker.counters.retried == 0
    assert agent_log.events("retry") == [] and agent_log.events("batch_crashed") == []
    assert agent_log.events("receive_failed") == [] and _mixed_batches(agent_log)
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def test_the_agent_process_in_burst_mode_exits_0_after_poison(stack, aws):
    poison = _poison(stack)
    good = _good_images(stack, ["p0", "p1"])
    stack.send_event(good[0])
    for body in poison:
        stack.send(body)
    stack.send_event(good[1])

    agent = AgentProcess(stack.write_config(), "--burst", env=aws)
    code = agent.wait(120)

    assert code == 0, agent.lines[-20:]
    assert stack.keys() == sorted(f"results/{key}.json" for key in good)
    assert len(agent.events("unknown_message")) == len(poison) and agent.events("shutdown")[0]["refused"] == len(poison)
    assert not [line for line in agent.lines if line.get("event") == "raw" and "Traceback" in line.get("text", "")]
