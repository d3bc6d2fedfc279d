"""Batch jobs against moto: submit a prefix or a list, fan out into chunks, one summary; replays are safe."""

from __future__ import annotations

import json

import pytest

from agent_support import png, race_at_group_listing
from runtime import aws
from runtime.agent import ledger, notice, submit, tally
from runtime.agent.layout import GROUPS, JOB_CHUNKS, JOB_MANIFEST, JOB_SUMMARY, NOTIFIED, job_root
from runtime.agent.work import Chunk, ImageRef, Item


def _summary(stack, job_id: str) -> bytes:
    return stack.s3.get_object(Bucket=stack.images, Key=f"results/_jobs/{job_id}/summary.json")["Body"].read()


def test_batch_job_over_a_prefix_captions_every_image_and_writes_a_summary(stack, monkeypatch, capsys):
    keys = [f"incoming/2024/img{n:02d}.png" for n in range(9)]
    for n, key in enumerate(keys):
        stack.put(key, png(colour=(0, n * 20, 0)))
    stack.put("incoming/2024/broken.jpg", b"\xff\xd8\xff not really a jpeg")
    stack.put("incoming/2024/README.txt", b"not an image suffix: skipped")
    stack.put("incoming/2023/old.png", png())  # outside the prefix
    monkeypatch.setenv("CAPTIONKIT_QUEUE_URL", stack.queue)
    monkeypatch.setenv("CAPTIONKIT_IMAGES_BUCKET", stack.images)

    assert submit.main([f"s3://{stack.images}/incoming/2024/", "--job-id", "job-1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    worker = stack.worker(burst=True)
    assert worker.run() == 0

    summary = json.loads(_summary(stack, "job-1"))
    assert printed == {"job_id": "job-1", "summary": f"s3://{stack.images}/results/_jobs/job-1/summary.json"}
    assert (summary["images"], summary["done"], summary["failed"]) == (10, 9, 1)
    assert summary["failures"][0]["uri"] == f"s3://{stack.images}/incoming/2024/broken.jpg"
    assert "not a readable image" in summary["failures"][0]["error"]
    assert summary["source"] == f"s3://{stack.images}/incoming/2024/"
    results = [key for key in stack.keys() if "/_jobs/" not in key]
    assert results == sorted(f"results/{key}.json" for key in [*keys, "incoming/2024/broken.jpg"])
    assert len(stack.keys("results/_jobs/job-1/chunks/")) == 3  # 10 images in chunks of batch_size 4
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def test_a_replayed_job_reuses_its_manifest_and_rewrites_the_same_summary(stack, monkeypatch):
    for n in range(5):
        stack.put(f"incoming/set/{n}.png", png(colour=(n * 40, 0, 0)))
    job = submit.build_job([f"s3://{stack.images}/incoming/set/"], "job-2")
    stack.send(job)
    stack.worker(burst=True).run()
    first = _summary(stack, "job-2")

    stack.put("incoming/set/late-arrival.png", png())  # added after the job was expanded
    stack.send(job)  # the job message again, as after a crash between fan-out and delete
    stack.worker(burst=True).run()

    assert _summary(stack, "job-2") == first
    assert json.loads(first)["images"] == 5
    assert "results/incoming/set/late-arrival.png.json" not in stack.keys()
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def test_batch_job_over_a_list_of_images(stack):
    stack.put("incoming/a/x.png", png())
    stack.put("incoming/b/y.jpg", png(fmt="JPEG"))
    stack.send(
        submit.build_job(
            [
                f"s3://{stack.images}/incoming/a/x.png",
                f"s3://{stack.images}/incoming/b/y.jpg",
                f"s3://{stack.images}/incoming/c/missing.png",
            ],
            "job-3",
        )
    )

    stack.worker(burst=True).run()

    summary = json.loads(_summary(stack, "job-3"))
    assert (summary["images"], summary["done"], summary["failed"]) == (3, 2, 1)
    assert stack.result("incoming/c/missing.png")["status"] == "error"


def test_an_empty_job_still_gets_a_summary(stack):
    stack.send(submit.build_job([f"s3://{stack.images}/incoming/nothing-here/"], "job-4"))
    stack.worker(burst=True).run()
    assert json.loads(_summary(stack, "job-4"))["images"] == 0


def _chunked_job(stack, config, job_id: str, chunks: int) -> str:
    """A job's manifest of `chunks` one-image chunks, as `plan.expand_images` freezes it; its root."""
    root = job_root(config, job_id)
    images = [f"s3://{stack.images}/incoming/set/{n}.png" for n in range(chunks)]
    stack.s3.put_object(
        Bucket=stack.images,
        Key=root + JOB_MANIFEST,
        Body=json.dumps(
            {
                "job_id": job_id,
                "source": f"{chunks} listed images",
                "images": images,
                "chunk_size": 1,
                "chunks": chunks,
                "created_at": "2025-01-01T00:00:00+00:00",
            }
        ).encode(),
    )
    return root


def _finish(s3, config, job_id: str, index: int, chunks: int) -> bool:
    item = Item(
        ImageRef(config.images_bucket, f"incoming/set/{index}.png"),
        None,
        error="not a readable image" if index == 4 else None,
    )
    return ledger.finish_chunk(s3, config, Chunk(job_id, index, chunks), [item])


def test_the_last_chunk_of_several_groups_writes_the_summary_each_chunk_listing_only_its_group(stack, monkeypatch):
    monkeypatch.setattr(tally, "GROUP", 3)
    config, s3, listed = stack.config(), aws.client("s3"), []
    s3.meta.events.register("after-call.s3.ListObjectsV2", lambda parsed, **_: listed.append(parsed))
    root = _chunked_job(stack, config, "job-g", chunks=7)  # groups 0-2, 3-5 and 6
    order = [6, 0, 4, 1, 3, 2]
    assert [_finish(s3, config, "job-g", index, 7) for index in order] == [False] * len(order)
    assert root + JOB_SUMMARY not in stack.keys(root)
    assert stack.keys(root + GROUPS) == [f"{root}{GROUPS}{g:06d}" for g in (0, 2)]  # group 1 still lacks 5

    assert _finish(s3, config, "job-g", 5, 7) is True
    summary = json.loads(_summary(stack, "job-g"))
    assert (summary["images"], summary["done"], summary["failed"]) == (7, 6, 1)
    markers = [reply for reply in listed if reply["Prefix"] == root + JOB_CHUNKS]
    assert len(markers) == len(order) + 1  # one listing of chunks/ per chunk, of its group alone
    assert all(reply["MaxKeys"] == 3 and reply["KeyCount"] <= 3 for reply in markers)
    assert len(stack.keys(root + JOB_CHUNKS)) == 7  # the markers keep their keys: chunks/<index>.json


def test_two_agents_finishing_the_last_chunks_of_two_groups_at_once_write_one_summary_told_once(stack, monkeypatch):
    monkeypatch.setattr(tally, "GROUP", 2)
    told = []
    monkeypatch.setattr(notice, "publish_job_done", lambda topic, region, summary, uri, sns=None: told.append(uri))
    config = stack.config(job_topic_arn="arn:aws:sns:us-east-1:123456789012:jobs")
    root = _chunked_job(stack, config, "job-r", chunks=4)
    assert not _finish(stack.s3, config, "job-r", 0, 4) and not _finish(stack.s3, config, "job-r", 2, 4)
    # both have written their group's object before either lists the groups; then one goes on, then the other
    results = race_at_group_listing(root + GROUPS, lambda s3, index: _finish(s3, config, "job-r", index, 4))
    assert results == {1: True, 3: True}  # both saw the job complete and wrote the same summary
    assert json.loads(_summary(stack, "job-r"))["done"] == 4
    assert told == [f"s3://{stack.images}/{root}{JOB_SUMMARY}"]  # told once: the summary was new to one of them


def test_two_agents_that_both_find_the_summary_new_send_one_notice(stack, monkeypatch):
    told = []
    monkeypatch.setattr(notice, "publish_job_done", lambda topic, region, summary, uri, sns=None: told.append(uri))
    config = stack.config(job_topic_arn="arn:aws:sns:us-east-1:123456789012:jobs")
    root = _chunked_job(stack, config, "job-n", chunks=2)
    assert not _finish(stack.s3, config, "job-n", 0, 2) and _finish(stack.s3, config, "job-n", 1, 2)
    assert len(told) == 1
    # a second agent that checked for the summary before the first wrote it (both saw it new) tells nobody again
    monkeypatch.setattr(ledger, "object_exists", lambda s3, bucket, key: False)
    manifest = json.loads(stack.s3.get_object(Bucket=stack.images, Key=root + JOB_MANIFEST)["Body"].read())
    ledger.write_summary(stack.s3, config, "job-n", manifest)
    assert told == [f"s3://{stack.images}/{root}{JOB_SUMMARY}"]
    assert json.loads(stack.s3.get_object(Bucket=stack.images, Key=root + NOTIFIED)["Body"].read())["job_id"] == "job-n"


@pytest.mark.parametrize(
    "uris, error",
    [
        ([], "either one prefix"),
        (["s3://b/p/", "s3://b/x.png"], "not both"),
        (["http://b/x.png"], "not an S3 URI"),
    ],
)
def test_submit_refuses_ambiguous_jobs(uris, error):
    with pytest.raises(ValueError, match=error):
        submit.build_job(uris, "job")


def test_submit_without_a_queue_says_which_setting_is_missing(monkeypatch, capsys):
    monkeypatch.delenv("CAPTIONKIT_QUEUE_URL", raising=False)
    assert submit.main(["s3://b/p/"]) == 2
    assert "CAPTIONKIT_QUEUE_URL" in capsys.readouterr().err


def test_submit_refuses_images_the_workers_cannot_read_before_queueing(stack, monkeypatch, capsys):
    monkeypatch.setenv("CAPTIONKIT_QUEUE_URL", stack.queue)
    monkeypatch.setenv("CAPTIONKIT_IMAGES_BUCKET", stack.images)
    for uris in (
        [f"s3://{stack.images}/archive/"],
        ["s3://other-bucket/incoming/a.png"],
        [f"s3://{stack.images}/incoming/a.png", f"s3://{stack.images}/elsewhere/b.png"],
    ):
        assert submit.main([*uris, "--job-id", "refused"]) == 2
        assert "the only place the workers may read" in capsys.readouterr().err
    assert stack.counts() == {"visible": 0, "in_flight": 0}  # nothing was queued
