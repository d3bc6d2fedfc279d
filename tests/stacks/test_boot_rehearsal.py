"""The worker as an instance runs it: the deployed user data, the bundle synthesis made, the boot with the real pip
installing the real locks into a fresh venv, and the agent started exactly as its systemd unit says.

What this machine cannot have is replaced, and only that: the operating system's services (dnf, systemctl,
useradd, chown, the CloudWatch agent, instance metadata) are stubs, `aws s3 cp` reads from the local AWS, the
interpreter is python3.11 (the one torch CPU wheel here is for it; the DLAMI's is 3.12), and torch is the CPU
build in place of runtime-cuda.lock, so the agents run on the CPU (CAPTIONKIT_DEVICE=cpu). `nvidia-smi -L` lists
two GPUs, so the boot writes and enables an agent for each, and both are started as their unit says.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools import flow, local, models
from tools.local_aws import aws_client, child_env, free_port
from tools.paths import LOCAL_STATE, REPO

pytestmark = pytest.mark.e2e
INSTALL_DIR = "/opt/captionkit"
CPU_TORCH = "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
STUB = '#!/bin/sh\necho "$(basename "$0") $*" >> "$STUB_LOG"\n'
CURL_STUB = STUB + 'case "$*" in *instance-id*) echo i-0rehearsal;; *api/token*) echo token;; *) exit 22;; esac\n'
GPUS = 2
NVIDIA_SMI_STUB = STUB + "".join(f'echo "GPU {i}: NVIDIA A10G (UUID: GPU-rehearsal-{i})"\n' for i in range(GPUS))
# `aws s3 cp s3://bucket/key dest` reads the local AWS (the bundle that `cdk deploy` uploaded); the rest is logged
AWS_STUB = f"""#!{sys.executable}
import os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write("aws " + " ".join(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["s3", "cp"] and sys.argv[3].startswith("s3://"):
    import boto3
    bucket, key = sys.argv[3][5:].split("/", 1)
    boto3.client("s3", region_name=os.environ["AWS_REGION"]).download_file(bucket, key, sys.argv[4])
"""


def _stub(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)
    (folder / name).chmod(0o755)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """Moto with this app deployed by the cdk CLI; (outputs, aws environment); stopped afterwards."""
    state = tmp_path_factory.mktemp("local-aws")
    outputs = local.up(port=free_port(), state_dir=state)
    saved = json.loads((state / LOCAL_STATE.name).read_text())
    try:
        yield outputs, child_env(saved["endpoint_url"], saved["region"])
    finally:
        local.down(state_dir=state)


def deployed_user_data(env: dict) -> str:
    """The user data of the deployed launch template, as an instance would receive it."""
    ec2 = aws_client("ec2", env["AWS_REGION"], env["AWS_ENDPOINT_URL"])
    [template] = ec2.describe_launch_templates()["LaunchTemplates"]
    [version] = ec2.describe_launch_template_versions(
        LaunchTemplateId=template["LaunchTemplateId"], Versions=["$Latest"]
    )["LaunchTemplateVersions"]
    return base64.b64decode(version["LaunchTemplateData"]["UserData"]).decode()


@pytest.fixture(scope="module")
def booted(deployed, tiny_artifact, tmp_path_factory):
    """Images waiting and a model published, then the deployed user data run in a temporary root."""
    if not os.path.exists(CPU_TORCH):
        pytest.fail(f"{CPU_TORCH} is missing: the rehearsal installs this machine's CPU build of torch 2.13.0")
    outputs, env = deployed
    s3 = aws_client("s3", env["AWS_REGION"], env["AWS_ENDPOINT_URL"])
    models.upload(s3, outputs["ArtifactsBucket"], outputs["ModelPointerKey"], tiny_artifact, progress=False)
    truth = flow.drop_images(s3, outputs["ImagesBucket"], outputs["ImagesPrefix"], 6, seed=11)
    bad = f"{outputs['ImagesPrefix']}bad/not-an-image.jpg"
    s3.put_object(Bucket=outputs["ImagesBucket"], Key=bad, Body=b"hello, I am text\n")

    tmp = tmp_path_factory.mktemp("instance")
    root, stubs = tmp / "root", tmp / "stubs"
    root.mkdir(), stubs.mkdir()
    for name in ("dnf", "systemctl", "useradd", "chown", "amazon-cloudwatch-agent-ctl", "sleep"):
        _stub(stubs, name, STUB)
    _stub(stubs, "curl", CURL_STUB), _stub(stubs, "aws", AWS_STUB), _stub(stubs, "nvidia-smi", NVIDIA_SMI_STUB)
    user_data = deployed_user_data(env)
    script = tmp / "user-data.sh"
    script.write_text(user_data.replace(INSTALL_DIR, f"{root}{INSTALL_DIR}"))
    boot_env = {
        **env,
        "PATH": f"{stubs}:/usr/local/bin:/usr/bin:/bin:{Path(shutil.which('python3.11')).parent}",
        "ROOT": str(root),
        "STUB_LOG": str(tmp / "calls.log"),
        "CAPTIONKIT_PYTHON": "python3.11",
        "CAPTIONKIT_TORCH_WHEEL": CPU_TORCH,
        "CAPTIONKIT_DEVICE": "cpu",
        "CAPTIONKIT_IMDS_URL": "",
        "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip"),
    }
    started = time.monotonic()
    result = subprocess.run(["bash", str(script)], env=boot_env, capture_output=True, text=True, timeout=900)
    boot_s = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return {
        "root": root,
        "env": env,
        "outputs": outputs,
        "truth": truth,
        "bad": bad,
        "user_data": user_data,
        "calls": (tmp / "calls.log").read_text().splitlines(),
        "boot_s": boot_s,
        "tmp": tmp,
    }


def test_the_deployed_user_data_fetches_the_synthesized_bundle_and_runs_its_boot(booted):
    user_data, calls = booted["user_data"], booted["calls"]
    assert f"bash {INSTALL_DIR}/src/stacks/boot/bootstrap.sh" in user_data
    [copy] = [c for c in calls if c.startswith("aws s3 cp s3://cdk-")]
    assert copy.endswith(f"{booted['root']}{INSTALL_DIR}/bundle.zip --region us-east-1")
    src = booted["root"] / INSTALL_DIR.lstrip("/") / "src"
    assert sorted(p.name for p in src.iterdir()) == ["requirements", "runtime", "stacks"]


def test_the_venv_holds_exactly_the_locked_packages_and_the_substituted_torch(booted):
    python = booted["root"] / "opt/captionkit/venv/bin/python"
    listed = json.loads(
        subprocess.run(
            [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
        ).stdout
    )
    installed = {re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"] for p in listed}
    lock = (REPO / "requirements/runtime.lock").read_text()
    locked = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in re.findall(r"^([A-Za-z0-9._-]+)==(\S+) ", lock, re.M)}
    assert {k: v for k, v in installed.items() if k not in ("pip", "torch")} == locked
    assert installed["torch"] == "2.13.0+cpu"


def test_the_venv_reads_and_writes_parquet_as_the_dataset_worker_does(booted, tmp_path):
    """pyarrow comes from runtime.lock alone (installed --no-deps): the instance's venv writes a Parquet file and
    reads it back, so a shard job does not fail at its first import on a real instance."""
    python = booted["root"] / "opt/captionkit/venv/bin/python"
    script = (
        "import sys, pyarrow as pa, pyarrow.parquet as pq\n"
        "pq.write_table(pa.table({'key': ['a', 'b'], 'image': [b'\\xff\\xd8', None]}), sys.argv[1])\n"
        "table = pq.read_table(sys.argv[1])\n"
        "print(pa.__version__, table.num_rows, table.column('key').to_pylist())\n"
    )
    result = subprocess.run(
        [str(python), "-I", "-c", script, str(tmp_path / "shard.parquet")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [pin] = re.findall(r"^pyarrow==(\S+)", (REPO / "requirements/runtime.txt").read_text(), re.M)
    assert result.stdout.split() == [pin, "2", "['a',", "'b']"]


def test_the_boot_log_times_every_phase(booted):
    log = (booted["root"] / "var/log/captionkit/bootstrap.log").read_text()
    phases = dict(re.findall(r"phase=(\w+) s=(\d+\.\d+)", log))
    assert list(phases) == ["system", "venv", "pip", "gpu_check", "config", "logs", "start"]
    assert '"problem": "torch is a CPU-only build' in log  # the GPU check ran and said what it saw


def test_the_written_units_pass_systemd_analyze_verify(booted, tmp_path):
    """systemd's own check of the units, each GPU's instance of the agent template among them, with the instance's
    /opt/captionkit mapped to where the rehearsal put it (systemd-analyze checks that ExecStart= programs exist;
    --root= would also hide this machine's /bin/bash)."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: `apt-get install systemd` (Debian) provides it")
    units = booted["root"] / "etc/systemd/system"
    enabled = [c.split()[3:] for c in booted["calls"] if c.startswith("systemctl enable --now")]
    assert enabled == [[f"captionkit-agent@{gpu}.service" for gpu in range(GPUS)]]
    names = [*enabled[0], "captionkit-give-up.service"]
    for name in names:
        source = units / re.sub(r"@\d+\.", "@.", name)  # an instance loads its template's file
        (tmp_path / name).write_text(source.read_text().replace(INSTALL_DIR, f"{booted['root']}{INSTALL_DIR}"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / name) for name in names)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "captionkit" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def unit_command(root: Path, gpu: int) -> tuple[list[str], dict, Path, Path]:
    """ExecStart, Environment, WorkingDirectory and StandardOutput of GPU `gpu`'s instance of the written template
    (%i is the index), mapped into `root`."""
    unit = (root / "etc/systemd/system/captionkit-agent@.service").read_text().replace("%i", str(gpu))
    lines = re.findall(r"^(ExecStart|Environment|WorkingDirectory|StandardOutput)=(.*)$", unit, re.M)
    values = dict(lines)
    inside = lambda path: str(root) + path if path.startswith("/") else path  # noqa: E731
    command = [inside(word) for word in shlex.split(values["ExecStart"])]
    pairs = [pair.split("=", 1) for key, line in lines if key == "Environment" for pair in shlex.split(line)]
    environment = {k: inside(v) for k, v in pairs}
    return command, environment, Path(inside(values["WorkingDirectory"])), Path(inside(values["StandardOutput"][7:]))


def _start_agent(root: Path, env: dict, gpu: int) -> tuple[subprocess.Popen, Path]:
    command, unit_env, workdir, log_path = unit_command(root, gpu)
    (root / "var/lib/captionkit").mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # the unit's environment, plus what the instance profile and metadata give an instance, and the CPU device;
    # batches of 2 so that the two agents share the second round of images
    agent_env = {
        **unit_env,
        "PATH": "/usr/bin:/bin",
        "CAPTIONKIT_DEVICE": "cpu",
        "CAPTIONKIT_IMDS_URL": "",
        "CAPTIONKIT_BATCH_SIZE": "2",
        **{k: v for k, v in env.items() if k.startswith("AWS_")},
    }
    with open(log_path, "a") as log:
        agent = subprocess.Popen(command, cwd=workdir, env=agent_env, stdout=log, stderr=subprocess.STDOUT)
    return agent, log_path


def _events(log_path: Path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


def _wait_for_results(s3, outputs, keys, agents, logs) -> dict:
    deadline, results = time.monotonic() + 300, {}
    while time.monotonic() < deadline and all(a.poll() is None for a in agents):
        results = flow.read_results(s3, outputs["ResultsBucket"], outputs["ResultsPrefix"], keys)
        if all(results.values()):
            return results
        time.sleep(1)
    raise AssertionError((results, *(p.read_text()[-3000:] for p in logs)))


def test_two_agents_started_as_their_units_say_both_caption_and_drain_on_sigterm(booted):
    """One agent per stubbed GPU, each started exactly as its instance of the template says: the images waiting
    at boot are captioned, then a second round of 24 is shared between the two, and SIGTERM drains both."""
    root, env, outputs = booted["root"], booted["env"], booted["outputs"]
    s3 = aws_client("s3", env["AWS_REGION"], env["AWS_ENDPOINT_URL"])
    started = [_start_agent(root, env, gpu) for gpu in range(GPUS)]
    agents, logs = [a for a, _ in started], [p for _, p in started]
    keys = [*booted["truth"], booted["bad"]]
    try:
        results = _wait_for_results(s3, outputs, keys, agents, logs)
        deadline = time.monotonic() + 300
        while not all("started" in [e.get("event") for e in _events(p)] for p in logs):
            assert time.monotonic() < deadline and all(a.poll() is None for a in agents), logs[-1].read_text()[-3000:]
            time.sleep(1)
        second = flow.drop_images(s3, outputs["ImagesBucket"], f"{outputs['ImagesPrefix']}round-2/", 24, seed=12)
        results |= _wait_for_results(s3, outputs, list(second), agents, logs)
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
        assert [agent.wait(timeout=120) for agent in agents] == [0] * GPUS, [p.read_text()[-3000:] for p in logs]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    assert all(results[k]["status"] == "ok" and results[k]["caption"] is not None for k in [*booted["truth"], *second])
    assert results[booted["bad"]]["status"] == "error"
    events = [_events(p) for p in logs]
    for gpu, lines in enumerate(events):
        names = [e.get("event") for e in lines]
        assert {"model_fetched", "started", "first_caption", "shutdown"} <= set(names), (gpu, names)
        batches = [e for e in lines if e.get("event") == "batch" and e["images"]]
        assert batches, f"agent {gpu} captioned nothing"
        assert {e["Gpu"] for e in batches} == {f"i-0rehearsal/{gpu}"}
        assert ["Gpu", "Queue"] in batches[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
        assert list((root / f"var/lib/captionkit/gpu{gpu}").glob("*.pt2")), f"agent {gpu} has no cache of its own"
    write_cold_start(booted, min(events, key=lambda lines: _first_caption(lines)["since_ready_s"]))


def _first_caption(events: list[dict]) -> dict:
    return next(e for e in events if e.get("event") == "first_caption")


def write_cold_start(booted, events) -> None:
    """The locally measured cold-start phases, for BENCHMARKS.md (printed, and kept beside the test's files)."""
    log = (booted["root"] / "var/log/captionkit/bootstrap.log").read_text()
    phases = {f"boot_{k}": float(v) for k, v in re.findall(r"phase=(\w+) s=(\d+\.\d+)", log)}
    by_name = {e["event"]: e for e in events if "event" in e}
    fetched, started, first = by_name["model_fetched"], by_name["started"], by_name["first_caption"]
    phases |= {
        "agent_pointer": fetched["pointer_s"],
        "agent_download": fetched["download_s"],
        "agent_load": fetched["load_s"],
        "agent_warm_up": started["warm_up_s"],
        "agent_start_total": started["start_s"],
        "first_caption_after_ready": first["since_ready_s"],
    }
    line = json.dumps({"user_data_total_s": round(booted["boot_s"], 2), **phases})
    (booted["tmp"] / "cold-start.json").write_text(line)
    print(f"\ncold start (boot rehearsal): {line}")
