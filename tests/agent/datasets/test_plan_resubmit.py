"""Resubmitting a dataset job skips the shards done with the same model and settings; a retry queues exactly the
failed ones (or those with error rows); a run with nothing to do writes its summary at once."""

from __future__ import annotations

import json
import types

import pytest
from plan_support import MODEL, drain, get_json, job_of, put_shards

from runtime.agent import ledger, plan
from runtime.agent.expand import JobExpansion
from runtime.agent.layout import job_root, run_root
from runtime.agent.messages import parse_body
from runtime.agent.scope import Scope
from runtime.agent.work import Batch, Message
from runtime.errors import UnknownMessage


def _marker(index, status="done", errors=0, model=MODEL, settings=None, config=None) -> dict:
    return {
        "index": index,
        "run": "run-1",
        "status": status,
        "samples": 2,
        "ok": 2 - errors,
        "errors": errors,
        "shard": f"s{index}",
        "error": "bad" if status == "failed" else None,
        "model_sha256": model.sha256,
        "settings": settings or ledger.settings_fingerprint(model, config),
        "finished_at": "2025-01-01T00:00:10+00:00",
    }


def _with_markers(stack, config, markers: dict):
    put_shards(stack, 5)
    plan.expand(
        stack.s3, stack.sqs, config, job_of(stack, config, {"shards": f"s3://{stack.images}/incoming/set/"}), MODEL
    )
    drain(stack)
    for index, marker in markers.items():
        ledger.put_json(stack.s3, stack.images, job_root(config, "job-1") + f"chunks/{index:06d}.json", marker)


def test_a_resubmission_skips_shards_done_with_the_same_model_and_settings(stack):
    config = stack.config()
    _with_markers(
        stack,
        config,
        {
            0: _marker(0, config=config),
            1: _marker(1, errors=1, config=config),
            2: _marker(2, "failed", config=config),
            3: _marker(3, settings="0" * 16),
        },
    )
    source = f"s3://{stack.images}/incoming/set/"
    again = {**job_of(stack, config, {"shards": source}), "run": "run-2"}
    assert plan.expand(stack.s3, stack.sqs, config, again, MODEL)["indexes"] == [2, 3, 4]
    assert [body["index"] for body in drain(stack)] == [2, 3, 4]
    other = types.SimpleNamespace(name="fake-b", sha256="b" * 64)  # a new model redoes everything
    assert plan.expand(stack.s3, stack.sqs, config, {**again, "run": "run-3"}, other)["indexes"] == [
        0,
        1,
        2,
        3,
        4,
    ]
    with pytest.raises(UnknownMessage, match="was created over"):
        plan.expand(stack.s3, stack.sqs, config, {**again, "run": "run-4", "source": source + "x/"}, MODEL)
    assert job_root(config, again["job_id"]) + "refused.json" not in stack.keys()  # a message naming another job


@pytest.mark.parametrize("choice, indexes", [("failed", [2]), ("errors", [1]), ("both", [1, 2])])
def test_a_retry_queues_exactly_the_shards_it_names(stack, choice, indexes):
    config = stack.config()
    _with_markers(
        stack,
        config,
        {0: _marker(0, config=config), 1: _marker(1, errors=1, config=config), 2: _marker(2, "failed", config=config)},
    )
    retry = job_of(stack, config, {"retry": choice}) | {"run": "run-r"}
    queued = plan.expand(stack.s3, stack.sqs, config, retry, MODEL)
    assert (queued["indexes"], queued["reason"]) == (indexes, f"retry:{choice}")
    assert [body["index"] for body in drain(stack)] == indexes
    assert get_json(stack, run_root(job_root(config, "job-1"), "run-r") + "queued.json") == queued


def test_a_retry_of_no_dataset_job_is_refused_and_dead_lettered(stack):
    config = stack.config()
    retry = job_of(stack, config, {"retry": "failed"})
    with pytest.raises(UnknownMessage, match="nothing to retry"):
        plan.expand(stack.s3, stack.sqs, config, retry, MODEL)
    message = Message("m1", "r1", "{}", 1, 0.0, 0.0)
    batch = Batch(
        messages=[message],
        work={
            "m1": parse_body(
                json.dumps({"type": "captionkit.job", "job_id": "job-1", "run": "run-1", "retry": "failed"}),
                Scope.of(config),
            )
        },
    )
    done, retry_later, refused = [], [], []
    settle = types.SimpleNamespace(
        done=done.extend,
        retry=lambda ms, reason: retry_later.extend(ms),
        dead_letter=lambda m, reason: refused.append((m, reason)),
    )
    JobExpansion(s3=stack.s3, sqs=stack.sqs, config=config, settle=settle, progress=None).run(
        message, batch.work["m1"], MODEL
    )
    assert done == [] and retry_later == [] and refused[0][0] is message and "nothing to retry" in refused[0][1]


def test_a_run_with_nothing_to_do_writes_the_summary_now(stack):
    config = stack.config()
    empty = job_of(stack, config, {"shards": f"s3://{stack.images}/incoming/none/"})
    assert plan.expand(stack.s3, stack.sqs, config, empty, MODEL)["indexes"] == []
    summary = get_json(stack, job_root(config, "job-1") + "summary.json")
    assert (summary["shards"], summary["images"], summary["run"]) == (0, 0, "run-1") and drain(stack) == []
