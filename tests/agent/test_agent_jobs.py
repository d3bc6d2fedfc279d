"""Prefix and URI-list jobs against moto: submit, expand into part files and part messages, a result JSON per image,
one summary; replays and resubmissions are safe. They run on the one job engine dataset jobs use."""

from __future__ import annotations

import json

import pytest

from agent_support import png
from runtime.agent import submit
from runtime.agent.layout import JOB_CHUNKS, JOB_PARTS, job_root


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
    worker = stack.worker(stack.config(job_chunk_size=4), burst=True)
    assert worker.run() == 0

    summary = json.loads(_summary(stack, "job-1"))
    assert printed == {
        "job_id": "job-1",
        "run": printed["run"],
        "summary": f"s3://{stack.images}/results/_jobs/job-1/summary.json",
    }
    assert (summary["kind"], summary["run"]) == ("images", printed["run"])
    assert (summary["images"], summary["done"], summary["failed"]) == (10, 9, 1)
    assert (summary["shards"], summary["shards_done"], summary["shards_failed"]) == (3, 3, 0)
    assert summary["error_images"][0]["uri"] == f"s3://{stack.images}/incoming/2024/broken.jpg"
    assert "not a readable image" in summary["error_images"][0]["error"]
    assert summary["source"] == f"s3://{stack.images}/incoming/2024/"
    assert summary["results"] == f"s3://{stack.images}/results/"
    results = [key for key in stack.keys() if "/_jobs/" not in key]
    assert results == sorted(f"results/{key}.json" for key in [*keys, "incoming/2024/broken.jpg"])
    root = job_root(stack.config(), "job-1")
    assert len(stack.keys(root + JOB_PARTS)) == len(stack.keys(root + JOB_CHUNKS)) == 3  # 10 images in parts of 4
    assert stack.keys(root + "shards/") == []  # the output of a prefix job is the result JSON of each image
    record = stack.result("incoming/2024/img00.png")
    assert record["status"] == "ok" and record["source"]["size"] == len(png(colour=(0, 0, 0)))
    assert record["source"]["etag"]  # which bytes it read, as the GET found them
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


def test_a_resubmitted_job_skips_its_done_parts_and_a_retry_redoes_those_with_errors(stack, monkeypatch):
    for n in range(4):
        stack.put(f"incoming/again/{n}.png", png(colour=(0, 0, n * 50)))
    stack.put("incoming/again/9-broken.png", b"not a png")
    config = stack.config(job_chunk_size=2)  # parts [0, 1], [2, 3], [9-broken]
    stack.send(submit.build_job([f"s3://{stack.images}/incoming/again/"], "job-5", run="20260101-000000-a"))
    stack.worker(config, burst=True).run()
    first = json.loads(_summary(stack, "job-5"))
    assert (first["images"], first["done"], first["failed"], first["error_shards"]) == (5, 4, 1, [2])

    stack.send(submit.build_job([f"s3://{stack.images}/incoming/again/"], "job-5", run="20260101-000000-b"))
    stack.send(submit.build_dataset_job("retry", "job-5", "20260101-000000-c", only="errors"))
    agent = stack.worker(config, burst=True)
    agent.run()
    root = job_root(config, "job-5")
    queued = {
        run: json.loads(stack.s3.get_object(Bucket=stack.images, Key=f"{root}runs/{run}/queued.json")["Body"].read())[
            "indexes"
        ]
        for run in ("20260101-000000-b", "20260101-000000-c")
    }
    assert queued == {"20260101-000000-b": [], "20260101-000000-c": [2]}  # same model, same settings: nothing new
    assert json.loads(_summary(stack, "job-5"))["run"] == "20260101-000000-c"
    assert stack.counts() == {"visible": 0, "in_flight": 0}


def test_a_job_id_submitted_again_over_another_list_is_refused_and_dead_lettered(stack):
    stack.put("incoming/l/a.png", png())
    stack.put("incoming/l/b.png", png())
    stack.send(submit.build_job([f"s3://{stack.images}/incoming/l/a.png"], "job-6"))
    stack.worker(burst=True).run()
    stack.send(submit.build_job([f"s3://{stack.images}/incoming/l/b.png"], "job-6"))
    stack.worker(burst=True).run()
    assert stack.counts() == {"visible": 0, "in_flight": 0}
    reasons = [m["MessageAttributes"]["captionkit_error"]["StringValue"] for m in stack.dead_letters()]
    assert len(reasons) == 1 and "was created over '1 listed images (" in reasons[0]
    assert "results/incoming/l/b.png.json" not in stack.keys()


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


def test_a_job_may_ask_for_its_part_size_and_submit_refuses_one_the_agents_would(stack, monkeypatch, capsys):
    for n in range(5):
        stack.put(f"incoming/sized/{n}.png", png(colour=(n * 40, 40, 0)))
    monkeypatch.setenv("CAPTIONKIT_QUEUE_URL", stack.queue)
    monkeypatch.setenv("CAPTIONKIT_IMAGES_BUCKET", stack.images)
    prefix = f"s3://{stack.images}/incoming/sized/"
    assert submit.main([prefix, "--job-id", "job-7", "--part-size", "2"]) == 0
    capsys.readouterr()
    for argv, why in (
        ([prefix, "--part-size", "0"], "expected 1 to 100,000"),
        (["--shards", prefix, "--part-size", "2"], "a shard is one part"),
    ):
        assert submit.main(argv) == 2 and why in capsys.readouterr().err
    assert stack.worker(burst=True).run() == 0

    summary = json.loads(_summary(stack, "job-7"))
    assert (summary["shards"], summary["images"], summary["done"]) == (3, 5, 5)  # parts [0, 1], [2, 3], [4]
    root = job_root(stack.config(), "job-7")
    assert len(stack.keys(root + JOB_PARTS)) == 3 and stack.counts() == {"visible": 0, "in_flight": 0}
