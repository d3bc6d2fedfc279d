"""The worker boot script, run against a temporary root with dnf, pip, systemctl and friends stubbed."""
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "stacks" / "boot" / "bootstrap.sh"
INDEX = "https://download.pytorch.org/whl/cu128"
CONFIG = {"queue_url": "https://sqs.us-east-1.amazonaws.com/1/jobs", "region": "us-east-1",
          "artifacts_bucket": "artifacts", "model_pointer": "models/current.json", "results_bucket": "images",
          "results_prefix": "results/", "images_bucket": "images", "images_prefix": "incoming/",
          "image_suffixes": [".jpg", ".png"], "batch_size": 8, "visibility_timeout_s": 900, "device": "cuda",
          "compiled_cache_prefix": "compiled/", "asg_name": "CaptionKit-workers",
          "lifecycle_hook_name": "captionkit-drain", "metrics_namespace": "CaptionKit", "log_group": "the-logs"}
# Each stub logs its argv. The interpreter stub makes a venv whose python is a stub too; dnf "installs"
# a stub for each package it is asked for.
STUB = '#!/bin/sh\necho "$(basename "$0") $*" >> "$STUB_LOG"\n'
PYTHON_STUB = STUB + ('if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; fi\n')
DNF_STUB = STUB + ('for p in "$@"; do case "$p" in\n'
                   '  python*) cp "$STUB_DIR/.python" "$STUB_DIR/$p";;\n'
                   '  amazon-cloudwatch-agent) cp "$STUB_DIR/.plain" "$STUB_DIR/amazon-cloudwatch-agent-ctl";;\n'
                   'esac; done\n')


def write_stub(directory: Path, name: str, text: str) -> None:
    path = directory / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_boot(tmp_path, config=CONFIG, python="python3.11", preinstalled=True):
    stubs, root = tmp_path / "stubs", tmp_path / "root"
    stubs.mkdir(), root.mkdir()
    write_stub(stubs, ".python", PYTHON_STUB), write_stub(stubs, ".plain", STUB)
    for name in ("dnf", "useradd", "chown", "systemctl"):
        write_stub(stubs, name, DNF_STUB if name == "dnf" else STUB)
    if preinstalled:
        write_stub(stubs, python, PYTHON_STUB), write_stub(stubs, "amazon-cloudwatch-agent-ctl", STUB)
    env = {**os.environ, "ROOT": str(root), "PATH": f"{stubs}:{os.environ['PATH']}", "STUB_DIR": str(stubs),
           "STUB_LOG": str(tmp_path / "calls.log"), "CAPTIONKIT_AGENT_CONFIG": json.dumps(config),
           "CAPTIONKIT_TORCH_INDEX_URL": INDEX, "CAPTIONKIT_PYTHON": python}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    log = tmp_path / "calls.log"
    return result, root, log.read_text().splitlines() if log.exists() else []


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    result, root, calls = run_boot(tmp_path_factory.mktemp("boot"))
    assert result.returncode == 0, result.stdout + result.stderr
    return root, calls


def test_boot_installs_cuda_torch_first_then_the_runtime_requirements_into_a_venv(booted):
    root, calls = booted
    torch_pin = next(line for line in (REPO / "requirements/runtime.txt").read_text().splitlines()
                     if line.startswith("torch=="))
    pip = [c for c in calls if c.startswith("python -m pip install")]
    assert f"python3.11 -m venv {root}/opt/captionkit/venv" in calls
    assert pip == [f"python -m pip install --progress-bar off --index-url {INDEX} {torch_pin}",
                   f"python -m pip install --progress-bar off -r {REPO}/requirements/runtime.txt"]
    assert torch_pin == "torch==2.13.0"


def test_boot_writes_the_agent_config_readable_by_the_service_user_only(booted):
    root, calls = booted
    config = root / "etc/captionkit/agent.json"
    assert json.loads(config.read_text()) == CONFIG
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert f"chown root:captionkit {config}" in calls
    assert "useradd --system --home-dir /var/lib/captionkit --shell /sbin/nologin captionkit" in calls


def test_boot_runs_the_agent_under_systemd_with_restart_on_failure(booted):
    root, calls = booted
    unit = (root / "etc/systemd/system/captionkit-agent.service").read_text()
    assert "ExecStart=/opt/captionkit/venv/bin/python -m runtime agent --config /etc/captionkit/agent.json\n" in unit
    for line in ("User=captionkit", "Restart=on-failure", "KillSignal=SIGTERM", "TimeoutStopSec=900",
                 f"WorkingDirectory={REPO}", "WantedBy=multi-user.target"):
        assert f"\n{line}\n" in unit, line
    assert calls[-2:] == ["systemctl daemon-reload", "systemctl enable --now captionkit-agent.service"]


def test_boot_ships_boot_and_agent_logs_to_the_stacks_log_group(booted):
    root, calls = booted
    cwagent = json.loads((root / "opt/aws/amazon-cloudwatch-agent/etc/captionkit.json").read_text())
    files = cwagent["logs"]["logs_collected"]["files"]["collect_list"]
    assert [(f["file_path"], f["log_group_name"]) for f in files] == [
        ("/var/log/captionkit/bootstrap.log", "the-logs"), ("/var/log/captionkit/agent.log", "the-logs")]
    assert ("amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c "
            "file:/opt/aws/amazon-cloudwatch-agent/etc/captionkit.json") in calls
    assert "captionkit bootstrap: done" in (root / "var/log/captionkit/bootstrap.log").read_text()


def test_boot_installs_a_missing_interpreter_and_log_agent_with_dnf(tmp_path):
    result, root, calls = run_boot(tmp_path, python="python3.97", preinstalled=False)
    assert result.returncode == 0, result.stderr
    assert calls[0] == "dnf install -y python3.97 amazon-cloudwatch-agent"
    assert f"python3.97 -m venv {root}/opt/captionkit/venv" in calls


def test_boot_refuses_a_config_missing_keys_and_starts_nothing(tmp_path):
    result, root, calls = run_boot(tmp_path, config={k: v for k, v in CONFIG.items() if k != "queue_url"})
    assert result.returncode != 0
    assert "lacks ['queue_url']" in result.stderr + result.stdout
    assert not (root / "etc/systemd/system/captionkit-agent.service").exists()
    assert not any(c.startswith("systemctl") for c in calls)


def test_boot_accepts_the_agent_config_the_stack_renders(tmp_path):
    from stacks.synth import synthesize

    parts = synthesize().template["Outputs"]["AgentConfig"]["Value"]["Fn::Join"][1]
    rendered = json.loads("".join(p if isinstance(p, str) else "resolved-at-deploy" for p in parts))
    result, root, _calls = run_boot(tmp_path, config=rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((root / "etc/captionkit/agent.json").read_text()) == rendered
