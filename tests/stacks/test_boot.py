"""The worker boot script and its give-up path, run against a temporary root with pip, dnf, systemctl, aws and
instance metadata stubbed (tests/stacks/test_boot_rehearsal.py runs the real pip and the real agent)."""

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from runtime.agent.worker import DRAIN_TIMEOUT_EXIT
from runtime.gpu_check import NO_GPU_EXIT
from stacks.alarms import WORKER_FAILURES
from tools.paths import REPO

SCRIPT = REPO / "stacks" / "boot" / "bootstrap.sh"
GIVE_UP = REPO / "stacks" / "boot" / "give_up.sh"
CONFIG = {
    "queue_url": "https://sqs.us-east-1.amazonaws.com/1/jobs",
    "region": "us-east-1",
    "artifacts_bucket": "artifacts",
    "model_pointer": "models/current.json",
    "results_bucket": "images",
    "results_prefix": "results/",
    "images_bucket": "images",
    "images_prefix": "incoming/",
    "image_suffixes": [".jpg", ".png"],
    "batch_size": 8,
    "visibility_timeout_s": 900,
    "drain_timeout_s": 210,
    "device": "cuda",
    "compiled_cache_prefix": "compiled/",
    "asg_name": "CaptionKit-workers",
    "lifecycle_hook_name": "captionkit-drain",
    "metrics_namespace": "CaptionKit",
    "log_group": "the-logs",
}
# Each stub logs its argv. The interpreter stub makes a venv whose python is a stub too; that python's
# `-m runtime gpu-check` exits with $STUB_GPU_EXIT. curl answers instance metadata; aws answers
# get-metric-statistics with $STUB_RECENT_FAILURES.
STUB = '#!/bin/sh\necho "$(basename "$0") $*" >> "$STUB_LOG"\n'
PYTHON_STUB = STUB + (
    'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; fi\n'
    'if [ "$1 $2 $3" = "-m runtime gpu-check" ]; then exit "${STUB_GPU_EXIT:-0}"; fi\n'
)
CURL_STUB = STUB + 'case "$*" in *instance-id*) echo i-0123456789abcdef0;; *api/token*) echo token;; esac\n'
AWS_STUB = STUB + 'case "$*" in *get-metric-statistics*) echo "${STUB_RECENT_FAILURES:-None}";; esac\n'
# nvidia-smi -L lists $STUB_GPUS GPUs (1), nproc says $STUB_NPROC vCPUs (4)
NVIDIA_SMI_STUB = STUB + (
    'i=0; while [ "$i" -lt "${STUB_GPUS:-1}" ]; do echo "GPU $i: NVIDIA A10G (UUID: GPU-$i)"; i=$((i + 1)); done\n'
)
NPROC_STUB = STUB + 'echo "${STUB_NPROC:-4}"\n'


def write_stub(directory: Path, name: str, text: str) -> None:
    path = directory / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_boot(tmp_path, config=CONFIG, python="python3.12", preinstalled=True, script=SCRIPT, args=(), **env):
    stubs, root = tmp_path / "stubs", tmp_path / "root"
    stubs.mkdir(exist_ok=True), root.mkdir(exist_ok=True)
    for name in ("dnf", "useradd", "chown", "systemctl", "sleep", "amazon-cloudwatch-agent-ctl"):
        write_stub(stubs, name, STUB)
    write_stub(stubs, "curl", CURL_STUB), write_stub(stubs, "aws", AWS_STUB)
    write_stub(stubs, "nvidia-smi", NVIDIA_SMI_STUB), write_stub(stubs, "nproc", NPROC_STUB)
    if preinstalled:
        write_stub(stubs, python, PYTHON_STUB)
    env = {
        **os.environ,
        "ROOT": str(root),
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "STUB_LOG": str(tmp_path / "calls.log"),
        "CAPTIONKIT_AGENT_CONFIG": json.dumps(config),
        "CAPTIONKIT_PYTHON": python,
        **env,
    }
    env.pop("CAPTIONKIT_DEVICE", None)
    result = subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60)
    log = tmp_path / "calls.log"
    return result, root, log.read_text().splitlines() if log.exists() else []


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    result, root, calls = run_boot(tmp_path_factory.mktemp("boot"))
    assert result.returncode == 0, result.stdout + result.stderr
    return root, calls


def test_boot_installs_only_the_hash_locked_runtime_then_the_locked_cuda_torch(booted):
    root, calls = booted
    pip = [c for c in calls if c.startswith("python -m pip")]
    locked = "--require-hashes --no-deps --only-binary=:all: --progress-bar off --disable-pip-version-check"
    assert f"python3.12 -m venv {root}/opt/captionkit/venv" in calls
    assert pip == [
        f"python -m pip install {locked} -r {REPO}/requirements/runtime.lock",
        f"python -m pip install {locked} -r {REPO}/requirements/runtime-cuda.lock",
        "python -m pip check",
    ]


def test_the_locks_pin_every_package_by_version_and_hash_and_torch_is_the_pinned_cuda_build():
    lock = (REPO / "requirements/runtime.lock").read_text() + (REPO / "requirements/runtime-cuda.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9._-]+)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}.*\n)+)", lock, re.M)
    names = {name.lower() for name, _version, _hashes in entries}
    assert len(entries) == lock.count("==") and len(entries) > 20
    assert {"torch", "numpy", "pillow", "tokenizers", "boto3", "nvidia-cudnn-cu13"} <= names
    assert ("torch", "2.13.0") in {(n, v) for n, v, _ in entries}
    cuda = (REPO / "requirements/runtime-cuda.lock").read_text()
    assert all(re.match(r"(torch|triton|nvidia-|cuda-)", n) for n in re.findall(r"^([a-z0-9._-]+)==", cuda, re.M))


def test_a_pytorch_index_other_than_pypi_installs_torch_pinned_from_it(tmp_path):
    index = "https://download.pytorch.org/whl/cu126"
    result, _root, calls = run_boot(tmp_path, CAPTIONKIT_TORCH_INDEX_URL=index)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"python -m pip install --progress-bar off --disable-pip-version-check --index-url {index} torch==2.13.0"
    ) in calls


def test_boot_proves_the_gpu_before_it_writes_the_config_or_starts_anything(booted):
    _root, calls = booted
    assert "python -m runtime gpu-check" in calls  # no --allow-cpu: the config's device is cuda
    assert calls.index("python -m runtime gpu-check") < calls.index("systemctl daemon-reload")


def test_boot_writes_the_agent_config_readable_by_the_service_user_only(booted):
    root, calls = booted
    config = root / "etc/captionkit/agent.json"
    assert json.loads(config.read_text()) == CONFIG
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert f"chown root:captionkit {config}" in calls
    assert "useradd --system --home-dir /var/lib/captionkit --shell /sbin/nologin captionkit" in calls


def test_agent_unit_restarts_on_failure_gives_up_after_a_burst_and_never_restarts_a_timed_out_drain(booted):
    root, calls = booted
    unit = (root / "etc/systemd/system/captionkit-agent@.service").read_text()
    assert "ExecStart=/opt/captionkit/venv/bin/python -m runtime agent --config /etc/captionkit/agent.json\n" in unit
    for line in (
        "User=captionkit",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "WantedBy=multi-user.target",
        f"TimeoutStopSec={CONFIG['drain_timeout_s'] + 30}",
        f"WorkingDirectory={REPO}",
        "StartLimitBurst=5",
        "StartLimitIntervalSec=900",
        "OnFailure=captionkit-give-up.service",
        f"SuccessExitStatus={DRAIN_TIMEOUT_EXIT}",
        f"RestartPreventExitStatus={DRAIN_TIMEOUT_EXIT}",
        "WatchdogSec=120",
        "NotifyAccess=main",
    ):
        assert f"\n{line}\n" in unit, line
    give_up = (root / "etc/systemd/system/captionkit-give-up.service").read_text()
    assert f"ExecStart=/bin/bash {REPO}/stacks/boot/give_up.sh " in give_up and "Type=oneshot" in give_up
    assert calls[-2:] == ["systemctl daemon-reload", "systemctl enable --now captionkit-agent@0.service"]


def test_boot_ships_boot_agent_and_give_up_logs_to_the_stacks_log_group(booted):
    root, calls = booted
    cwagent = json.loads((root / "opt/aws/amazon-cloudwatch-agent/etc/captionkit.json").read_text())
    files = cwagent["logs"]["logs_collected"]["files"]["collect_list"]
    assert [(f["file_path"], f["log_group_name"]) for f in files] == [
        ("/var/log/captionkit/bootstrap.log", "the-logs"),
        ("/var/log/captionkit/agent-0.log", "the-logs"),
        ("/var/log/captionkit/give-up.log", "the-logs"),
    ]
    assert (
        "amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c "
        "file:/opt/aws/amazon-cloudwatch-agent/etc/captionkit.json"
    ) in calls


def test_boot_log_times_every_phase(booted):
    root, _calls = booted
    log = (root / "var/log/captionkit/bootstrap.log").read_text()
    phases = re.findall(r"phase=(\w+) s=(\d+\.\d+) total_s=", log)
    assert [name for name, _ in phases] == ["system", "venv", "pip", "gpu_check", "config", "logs", "start"]
    assert "captionkit bootstrap: done" in log


def _gave_up(calls, recent=0, hold_s=300):
    assert any(
        c.startswith(
            "aws cloudwatch put-metric-data --region us-east-1 --namespace CaptionKit "
            f"--metric-name {WORKER_FAILURES} --dimensions AutoScalingGroupName=CaptionKit-workers"
        )
        for c in calls
    )
    assert f"sleep {hold_s << recent}" in calls
    assert calls[-1] == (
        "aws autoscaling set-instance-health --region us-east-1 --instance-id i-0123456789abcdef0 "
        "--health-status Unhealthy --no-should-respect-grace-period"
    )


def test_a_worker_without_a_usable_gpu_fails_its_boot_and_has_itself_replaced(tmp_path):
    result, root, calls = run_boot(tmp_path, STUB_GPU_EXIT=str(NO_GPU_EXIT))
    assert result.returncode == NO_GPU_EXIT
    assert "FAILED: boot failed at line" in result.stdout
    assert not (root / "etc/systemd/system/captionkit-agent@.service").exists()
    assert not any(c.startswith("systemctl") for c in calls)
    _gave_up(calls)


def test_a_missing_interpreter_is_a_failed_boot_not_a_dnf_install(tmp_path):
    result, _root, calls = run_boot(tmp_path, python="python3.97", preinstalled=False)
    assert result.returncode != 0
    assert "python3.97 not found; the DLAMI (Amazon Linux 2023) ships /usr/bin/python3.12" in result.stdout
    assert not any(c.startswith("dnf") and "python" in c for c in calls)
    _gave_up(calls)


def test_boot_refuses_a_config_missing_keys_and_starts_nothing(tmp_path):
    result, root, calls = run_boot(tmp_path, config={k: v for k, v in CONFIG.items() if k != "drain_timeout_s"})
    assert result.returncode != 0
    assert "lacks ['drain_timeout_s']" in result.stderr + result.stdout
    assert not (root / "etc/systemd/system/captionkit-agent@.service").exists()
    assert not any(c.startswith("systemctl") for c in calls)


def test_give_up_backs_off_longer_the_more_workers_failed_in_the_last_hour(tmp_path):
    result, root, calls = run_boot(
        tmp_path, script=GIVE_UP, args=("the agent failed 5 times",), STUB_RECENT_FAILURES="2.0"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _gave_up(calls, recent=2)
    give_up_log = (root / "var/log/captionkit/give-up.log").read_text()
    assert "2 failure(s) in group CaptionKit-workers in the last hour" in give_up_log


def test_give_up_never_waits_more_than_an_hour(tmp_path):
    result, _root, calls = run_boot(tmp_path, script=GIVE_UP, args=("x",), STUB_RECENT_FAILURES="40")
    assert result.returncode == 0, result.stderr
    assert "sleep 3600" in calls


def test_boot_accepts_the_agent_config_the_stack_renders(tmp_path):
    from stacks.synth import synthesize

    parts = synthesize().template["Outputs"]["AgentConfig"]["Value"]["Fn::Join"][1]
    rendered = json.loads("".join(p if isinstance(p, str) else "resolved-at-deploy" for p in parts))
    assert rendered["drain_timeout_s"] == synthesize().stack.settings.max_batch_s + 30
    result, root, _calls = run_boot(tmp_path, config=rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((root / "etc/captionkit/agent.json").read_text()) == rendered
