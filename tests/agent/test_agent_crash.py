"""Crash isolation, with the agent as a real process: an image that kills the worker ends as its own error record."""

from __future__ import annotations

import signal

from agent_support import AgentProcess, Stack, png


def test_an_image_that_kills_the_worker_ends_as_its_own_error_record_and_its_batch_mates_are_captioned(aws, tmp_path):
    stack = Stack(aws["AWS_ENDPOINT_URL"], tmp_path, max_receive=5)  # the stack's default receive limit
    stack.publish("fake-crashy", abort_on=[13, 13])
    keys = {
        "incoming/good-1.png": png((10, 0, 0)),
        "incoming/killer.png": png(size=(13, 13)),
        "incoming/good-2.png": png((20, 0, 0)),
        "incoming/good-3.png": png((30, 0, 0)),
    }
    for key, body in keys.items():
        stack.put(key, body)
        stack.send_event(key)
    settings = stack.write_config(visibility_timeout_s=2, batch_wait_s=1.0)

    codes, logs = [], []
    for _ in range(6):  # systemd's Restart=on-failure, by hand
        agent = AgentProcess(settings, "--burst", env=aws)
        codes.append(agent.wait(60))
        logs.append(agent.lines)
        if codes[-1] == 0:
            break

    assert codes == [-signal.SIGABRT] * 3 + [0], codes  # a batch crash, then the culprit alone twice
    crashes = [line for lines in logs for line in lines if line.get("event") == "device_crash"]
    assert len(crashes[0]["suspects"]) == 4  # the whole device batch was under suspicion
    assert [c.get("culprit") for c in crashes[1:]] == [f"s3://{stack.images}/incoming/killer.png"] * 2
    killer = stack.result("incoming/killer.png")
    assert killer["status"] == "error" and "crashed the worker 2 times" in killer["error"]
    for key in keys.keys() - {"incoming/killer.png"}:
        assert stack.result(key)["status"] == "ok"
    assert stack.counts() == {"visible": 0, "in_flight": 0}
    assert stack.counts(stack.dlq) == {"visible": 0, "in_flight": 0}  # no innocent image was dead-lettered
