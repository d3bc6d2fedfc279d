"""The boot on a multi-GPU instance: one agent per GPU that nvidia-smi lists, each on its own device, cache, log
stream and metric dimension, with the vCPUs shared out as download/decode threads (stubs as in test_boot.py)."""

import json
import re

from test_boot import CONFIG, run_boot

INSTANCE = "i-0123456789abcdef0"  # what test_boot's curl stub answers for instance-id


def _unit_environment(root) -> dict[str, str]:
    unit = (root / "etc/systemd/system/captionkit-agent@.service").read_text()
    pairs = " ".join(re.findall(r"^Environment=(.*)$", unit, re.M)).split()
    return dict(pair.split("=", 1) for pair in pairs)


def test_a_four_gpu_instance_starts_four_agents_each_on_its_own_gpu_cache_and_log(tmp_path):
    result, root, calls = run_boot(tmp_path, STUB_GPUS="4", STUB_NPROC="48")
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls[-1] == (
        "systemctl enable --now captionkit-agent@0.service captionkit-agent@1.service "
        "captionkit-agent@2.service captionkit-agent@3.service"
    )
    env = _unit_environment(root)
    assert {
        k: env[k]
        for k in (
            "CUDA_DEVICE_ORDER",
            "CUDA_VISIBLE_DEVICES",
            "CAPTIONKIT_AGENT_INDEX",
            "CAPTIONKIT_AGENT_COUNT",
            "CAPTIONKIT_GPU",
            "CAPTIONKIT_CACHE_DIR",
            "CAPTIONKIT_AGENTS_DIR",
            "CAPTIONKIT_PREFETCH_THREADS",
        )
    } == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "%i",
        "CAPTIONKIT_AGENT_INDEX": "%i",
        "CAPTIONKIT_AGENT_COUNT": "4",
        "CAPTIONKIT_GPU": f"{INSTANCE}/%i",
        "CAPTIONKIT_CACHE_DIR": "/var/lib/captionkit/gpu%i",
        "CAPTIONKIT_AGENTS_DIR": "/var/lib/captionkit/agents",
        "CAPTIONKIT_PREFETCH_THREADS": "12",
    }
    unit = (root / "etc/systemd/system/captionkit-agent@.service").read_text()
    assert "\nStandardOutput=append:/var/log/captionkit/agent-%i.log\n" in unit
    cwagent = json.loads((root / "opt/aws/amazon-cloudwatch-agent/etc/captionkit.json").read_text())
    streams = [f["log_stream_name"] for f in cwagent["logs"]["logs_collected"]["files"]["collect_list"]]
    assert streams == [
        "{instance_id}/bootstrap",
        *(f"{{instance_id}}/agent-{i}" for i in range(4)),
        "{instance_id}/give-up",
    ]
    assert json.loads((root / "etc/captionkit/agent.json").read_text()) == CONFIG  # one config for every agent
    assert "4 agent(s) on i-0123456789abcdef0, 12 download/decode threads each (48 vCPUs)" in result.stdout


def test_download_and_decode_threads_are_the_vcpus_per_gpu_and_at_least_two(tmp_path):
    for gpus, vcpus, threads in (("1", "4", "4"), ("8", "8", "2"), ("8", "192", "24")):
        (tmp_path / f"{gpus}x{vcpus}").mkdir()
        result, root, _calls = run_boot(tmp_path / f"{gpus}x{vcpus}", STUB_GPUS=gpus, STUB_NPROC=vcpus)
        assert result.returncode == 0, result.stdout + result.stderr
        assert _unit_environment(root)["CAPTIONKIT_PREFETCH_THREADS"] == threads


def test_a_cuda_worker_whose_nvidia_smi_lists_no_gpu_fails_its_boot(tmp_path):
    result, root, calls = run_boot(tmp_path, STUB_GPUS="0")
    assert result.returncode != 0
    assert "nvidia-smi -L lists no GPU, yet the device is cuda" in result.stdout
    assert not (root / "etc/systemd/system/captionkit-agent@.service").exists()
    assert any(c.startswith("aws autoscaling set-instance-health") for c in calls)


def test_a_cpu_worker_runs_one_agent(tmp_path):
    result, root, calls = run_boot(tmp_path, config={**CONFIG, "device": "cpu"}, STUB_GPUS="0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls[-1] == "systemctl enable --now captionkit-agent@0.service"
