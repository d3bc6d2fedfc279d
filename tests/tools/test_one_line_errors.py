"""Every entry point, run as the real process, says what to do in one line when it cannot reach what it needs."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tools.local_aws import free_port
from tools.paths import REPO

FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
AWS_COMMANDS = {  # the laptop commands that talk to a stack, with arguments that get them that far
    "status": ["-m", "tools.status"],
    "collect": ["-m", "tools.collect", "s3://images/incoming/", "{tmp}/captions.jsonl"],
    "submit": ["-m", "tools.submit", "s3://images/incoming/"],
    "models": ["-m", "tools.models", "list"],
    "redrive": ["-m", "tools.redrive"],
    "agent": ["-m", "tools.run_agent", "--burst"],
}


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The real process, its environment only what is given (plus the interpreter's basics), aimed at no AWS."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPTIONKIT_", "HF_"))}
    base.update(
        {
            "PYTHONPATH": str(REPO),
            "CAPTIONKIT_TARGET": "aws",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            **env,
        }
    )
    argv = [a.format(tmp=tmp_path) for a in args]
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=base, capture_output=True, text=True, timeout=120)


def assert_one_line(done: subprocess.CompletedProcess, *expected: str) -> str:
    err = done.stderr
    assert done.returncode != 0, (done.stdout, err)
    assert "Traceback" not in err and err.strip() and err.strip().count("\n") == 0, err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize("name", sorted(AWS_COMMANDS))
def test_no_local_stack_running_says_run_make_local_up(name, tmp_path):
    closed = f"http://localhost:{free_port()}"
    done = run(AWS_COMMANDS[name], tmp_path, AWS_ENDPOINT_URL=closed, **FAKE_KEYS)
    assert_one_line(done, "no local stack", "make local-up")


@pytest.mark.parametrize("name", sorted(AWS_COMMANDS))
def test_no_aws_credentials_says_run_aws_configure(name, tmp_path):
    done = run(AWS_COMMANDS[name], tmp_path, AWS_ENDPOINT_URL=f"http://localhost:{free_port()}")
    assert_one_line(done, "no AWS credentials", "aws configure")


class NotAws(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the handler's name is http.server's
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html><body>Not Found</body></html>")

    do_GET = do_PUT = do_POST

    def log_message(self, *_args) -> None:
        return None


def test_an_endpoint_that_is_not_aws_says_check_aws_endpoint_url(tmp_path):
    server = http.server.ThreadingHTTPServer(("localhost", 0), NotAws)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = run(
            AWS_COMMANDS["status"], tmp_path, AWS_ENDPOINT_URL=f"http://localhost:{server.server_port}", **FAKE_KEYS
        )
    finally:
        server.shutdown()
    assert_one_line(done, "AWS_ENDPOINT_URL")


def test_a_missing_bucket_is_named_in_one_line(moto_server, tmp_path):
    config = tmp_path / "agent.json"
    config.write_text(
        json.dumps(
            {
                "queue_url": f"{moto_server}/123456789012/jobs",
                "region": "us-east-1",
                "images_bucket": "no-such-bucket",
                "images_prefix": "incoming/",
            }
        )
    )
    done = run(
        ["-m", "runtime", "submit", "--config", str(config), "--shards", "s3://no-such-bucket/incoming/s/"],
        tmp_path,
        AWS_ENDPOINT_URL=moto_server,
        **FAKE_KEYS,
    )
    assert_one_line(done, "no-such-bucket", "does not exist")


def test_export_of_a_hub_id_offline_says_so_at_once(tmp_path):
    t0 = time.monotonic()
    done = run(
        ["-m", "export", "--model", "nlpconnect/vit-gpt2-image-captioning", "--out", "{tmp}/x.pt2"],
        tmp_path,
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
    )
    assert_one_line(done, "not in the Hugging Face cache", "HF_HUB_OFFLINE")
    assert time.monotonic() - t0 < 30  # no retries: imports and one look in the cache


@pytest.mark.parametrize(
    "model, expected", [("./demo-modle", "no such folder: ./demo-modle"), ("{tmp}", "has no config.json")]
)
def test_export_of_a_mistyped_local_folder_names_it(tmp_path, model, expected):
    done = run(["-m", "export", "--model", model, "--out", "{tmp}/x.pt2"], tmp_path, HF_HUB_OFFLINE="1")
    assert_one_line(done, expected.format(tmp=tmp_path))


def test_caption_of_a_missing_folder_names_it(tmp_path):
    done = run(["-m", "runtime", "caption", "--artifact", "{tmp}/model.pt2", "{tmp}/photos"], tmp_path)
    assert_one_line(done, "no such file or folder", "photos")


def test_the_traceback_is_one_setting_away(tmp_path):
    done = run(
        AWS_COMMANDS["status"],
        tmp_path,
        AWS_ENDPOINT_URL=f"http://localhost:{free_port()}",
        CAPTIONKIT_DEBUG="1",
        **FAKE_KEYS,
    )
    assert done.returncode != 0 and "Traceback" in done.stderr
