#!/usr/bin/env bash
# CaptionKit worker boot: install the locked runtime into a venv, prove the GPU, write the agent's config,
# start one agent per GPU under systemd (captionkit-agent@<index>.service; the agents of one instance find each
# other through runtime/agent/siblings.py). Run by user data from the unpacked runtime bundle. A failure at any
# step hands the instance to give_up.sh (metric, back-off, then "unhealthy" so the group replaces it).
# Inputs (environment):
#   CAPTIONKIT_AGENT_CONFIG     the agent config as JSON (the stack renders it)
#   CAPTIONKIT_TORCH_INDEX_URL  where torch comes from: empty or https://pypi.org/simple (default) installs the
#                               hash-locked CUDA 13.0 build (requirements/runtime-cuda.lock); another index
#                               (https://download.pytorch.org/whl/cu126 for drivers older than 580) installs
#                               torch==2.13.0 from it, pinned by version
#   CAPTIONKIT_PYTHON           the venv's interpreter (default python3.12: /usr/bin/python3.12 on the DLAMI
#                               Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023), per its release notes)
#   CAPTIONKIT_TORCH_WHEEL      rehearsal only: a torch wheel to install in place of runtime-cuda.lock
#   CAPTIONKIT_DEVICE           as for the agent: overrides the config's device (cpu skips the GPU requirement)
#   CAPTIONKIT_IMDS_URL         instance metadata (default http://169.254.169.254): the instance id names each GPU
#   ROOT                        prefix for every path written (the tests run the boot against a temporary root)
set -euo pipefail

ROOT="${ROOT:-}"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC_ON_HOST="${SRC#"$ROOT"}"  # the path as the instance sees it (what the unit files name)
PYTHON="${CAPTIONKIT_PYTHON:-python3.12}"
VENV=/opt/captionkit/venv
CONFIG=/etc/captionkit/agent.json
UNIT_DIR=/etc/systemd/system
CWAGENT_CONFIG=/opt/aws/amazon-cloudwatch-agent/etc/captionkit.json
LOG_DIR=/var/log/captionkit
STATE_DIR=/var/lib/captionkit
IMDS="${CAPTIONKIT_IMDS_URL-http://169.254.169.254}"
DEFAULT_INDEX=https://pypi.org/simple
PIP_LOCKED=(--require-hashes --no-deps --only-binary=:all: --progress-bar off --disable-pip-version-check)
export PATH="$PATH:/opt/aws/amazon-cloudwatch-agent/bin"

mkdir -p "$ROOT$LOG_DIR"
exec > >(tee -a "$ROOT$LOG_DIR/bootstrap.log") 2>&1
on_error() {
  local reason="boot failed at line $1 (exit $2): see $LOG_DIR/bootstrap.log"
  echo "captionkit bootstrap: FAILED: $reason" >&2
  bash "$SRC/stacks/boot/give_up.sh" "$reason" || true
  exit "$2"
}
trap 'on_error $LINENO $?' ERR
BOOT_T0=$EPOCHREALTIME
PHASE_T0=$BOOT_T0
phase() {  # one line per finished phase: its name and seconds, for the cold-start budget
  local now=$EPOCHREALTIME
  awk -v name="$1" -v now="$now" -v phase="$PHASE_T0" -v boot="$BOOT_T0" \
    'BEGIN { printf "captionkit bootstrap: phase=%s s=%.2f total_s=%.2f\n", name, now - phase, now - boot }'
  PHASE_T0=$now
}
echo "captionkit bootstrap: start $(date -u +%FT%TZ) from $SRC_ON_HOST"

: "${CAPTIONKIT_AGENT_CONFIG:?the agent config JSON is required}"
INDEX="${CAPTIONKIT_TORCH_INDEX_URL:-$DEFAULT_INDEX}"

# 1. the interpreter the AMI ships, the log shipper, the service user
if ! command -v "$PYTHON" >/dev/null; then
  echo "captionkit bootstrap: $PYTHON not found; the DLAMI (Amazon Linux 2023) ships /usr/bin/python3.12. Use that AMI or set CAPTIONKIT_PYTHON" >&2
  false
fi
command -v amazon-cloudwatch-agent-ctl >/dev/null || dnf install -y amazon-cloudwatch-agent
id -u captionkit >/dev/null 2>&1 || useradd --system --home-dir /var/lib/captionkit --shell /sbin/nologin captionkit
phase system

# 2. the virtual environment, from the locks only: the same bytes on every instance
"$PYTHON" -m venv "$ROOT$VENV"
phase venv
PIP=("$ROOT$VENV/bin/python" -m pip install)
"${PIP[@]}" "${PIP_LOCKED[@]}" -r "$SRC/requirements/runtime.lock"
if [[ -n "${CAPTIONKIT_TORCH_WHEEL:-}" ]]; then
  echo "captionkit bootstrap: rehearsal: $CAPTIONKIT_TORCH_WHEEL in place of runtime-cuda.lock"
  "${PIP[@]}" --no-deps --progress-bar off --disable-pip-version-check "$CAPTIONKIT_TORCH_WHEEL"
elif [[ "${INDEX%/}" == "$DEFAULT_INDEX" ]]; then
  "${PIP[@]}" "${PIP_LOCKED[@]}" -r "$SRC/requirements/runtime-cuda.lock"
else
  "${PIP[@]}" --progress-bar off --disable-pip-version-check --index-url "$INDEX" \
    "$(grep -E '^torch==' "$SRC/requirements/runtime.txt")"
fi
"$ROOT$VENV/bin/python" -m pip check
phase pip

# 3. the GPU: torch must run a kernel on it, or this instance cannot serve (never fall back to its CPU)
DEVICE="${CAPTIONKIT_DEVICE:-$(python3 -c 'import json, os; print(json.loads(os.environ["CAPTIONKIT_AGENT_CONFIG"]).get("device", "auto"))')}"
GPU_CHECK=("$ROOT$VENV/bin/python" -m runtime gpu-check)
[[ "$DEVICE" == cuda ]] || GPU_CHECK+=(--allow-cpu)
(cd "$SRC" && PYTHONPATH="$SRC" "${GPU_CHECK[@]}")
# every GPU busy: one agent per GPU that nvidia-smi lists (the CPU, on purpose, runs one); each agent's S3 reads
# and image decoding get the instance's vCPUs shared out among the agents (at least 2 threads)
GPUS="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
if (( GPUS == 0 )); then
  if [[ "$DEVICE" == cuda ]]; then
    echo "captionkit bootstrap: nvidia-smi -L lists no GPU, yet the device is cuda" >&2
    false
  fi
  GPUS=1
fi
VCPUS="$(nproc)"
THREADS=$(( VCPUS / GPUS > 2 ? VCPUS / GPUS : 2 ))
IMDS_TOKEN="$(curl -sf -m 5 -X PUT "$IMDS/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 60" || true)"
INSTANCE_ID="$(curl -sf -m 5 -H "X-aws-ec2-metadata-token: $IMDS_TOKEN" "$IMDS/latest/meta-data/instance-id" || true)"
[[ "$INSTANCE_ID" =~ ^i-[0-9a-z]{1,32}$ ]] || INSTANCE_ID="$(uname -n)"  # it goes into the unit file
echo "captionkit bootstrap: $GPUS agent(s) on $INSTANCE_ID, $THREADS download/decode threads each ($VCPUS vCPUs)"
phase gpu_check

# 4. the agent's config, checked for the keys the agent needs
mkdir -p "$ROOT$(dirname "$CONFIG")"
STOP_TIMEOUT_S="$(python3 - "$ROOT$CONFIG" <<'PY'
import json, os, sys
config = json.loads(os.environ["CAPTIONKIT_AGENT_CONFIG"])
required = ["queue_url", "region", "artifacts_bucket", "model_pointer", "results_bucket", "results_prefix",
            "images_bucket", "images_prefix", "image_suffixes", "batch_size", "visibility_timeout_s", "device",
            "drain_timeout_s", "compiled_cache_prefix", "asg_name", "lifecycle_hook_name", "metrics_namespace",
            "log_group"]
missing = [key for key in required if key not in config]
if missing:
    sys.exit(f"CAPTIONKIT_AGENT_CONFIG lacks {missing}")
with open(sys.argv[1], "w") as out:
    json.dump(config, out, indent=2, sort_keys=True)
print(int(config["drain_timeout_s"]) + 30)  # systemd's SIGKILL comes only after the agent's own drain bound
PY
)"
chmod 0640 "$ROOT$CONFIG"
chown root:captionkit "$ROOT$CONFIG"
phase config

# 5. logs: the CloudWatch agent ships boot and agent logs to the stack's log group
mkdir -p "$ROOT$(dirname "$CWAGENT_CONFIG")"
python3 - "$ROOT$CONFIG" "$ROOT$CWAGENT_CONFIG" "$LOG_DIR" "$GPUS" <<'PY'
import json, sys
config_path, out_path, log_dir, gpus = sys.argv[1:]
group = json.load(open(config_path))["log_group"]
names = ["bootstrap", *(f"agent-{gpu}" for gpu in range(int(gpus))), "give-up"]  # a log stream per agent
files = [{"file_path": f"{log_dir}/{name}.log", "log_group_name": group, "log_stream_name": f"{{instance_id}}/{name}"}
         for name in names]
json.dump({"logs": {"logs_collected": {"files": {"collect_list": files}}}}, open(out_path, "w"), indent=2)
PY
amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c "file:$CWAGENT_CONFIG"
phase logs

# 6. the agents under systemd, one instance of the template per GPU (%i: its index). Each restarts on failure;
#    after 5 failures in 15 minutes systemd gives up and OnFailure= runs give_up.sh (systemd 252 on AL2023 fires
#    OnFailure= only once restarts stop): one GPU that cannot serve has the whole instance replaced. Exit 75 is
#    the agent's "drain timed out while the instance is going away": not a failure, never restarted. Each agent
#    sees only its GPU (as cuda:0, numbered in nvidia-smi's PCI bus order), keeps its own cache (model file,
#    crash journal, compiled programs) and log, and names its GPU in its metrics; agent 0 completes the
#    instance's lifecycle hooks once the others have exited (life locks in agents/, runtime/agent/siblings.py).
mkdir -p "$ROOT$UNIT_DIR"
cat > "$ROOT$UNIT_DIR/captionkit-agent@.service" <<UNIT
[Unit]
Description=CaptionKit captioning agent on GPU %i
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=900
StartLimitBurst=5
OnFailure=captionkit-give-up.service

[Service]
Type=simple
User=captionkit
Group=captionkit
WorkingDirectory=$SRC_ON_HOST
Environment=PYTHONPATH=$SRC_ON_HOST PYTHONUNBUFFERED=1 HOME=$STATE_DIR
Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=%i CAPTIONKIT_GPU=$INSTANCE_ID/%i
Environment=CAPTIONKIT_AGENT_INDEX=%i CAPTIONKIT_AGENT_COUNT=$GPUS CAPTIONKIT_AGENTS_DIR=$STATE_DIR/agents
Environment=CAPTIONKIT_CACHE_DIR=$STATE_DIR/gpu%i CAPTIONKIT_PREFETCH_THREADS=$THREADS
ExecStart=$VENV/bin/python -m runtime agent --config $CONFIG
Restart=on-failure
RestartSec=10
SuccessExitStatus=75
RestartPreventExitStatus=75
KillSignal=SIGTERM
TimeoutStopSec=$STOP_TIMEOUT_S
# the agent says WATCHDOG=1 (runtime/agent/watchdog.py) only while it makes progress; silent this long: SIGABRT,
# then Restart=on-failure (https://www.freedesktop.org/software/systemd/man/latest/systemd.service.html#WatchdogSec=)
WatchdogSec=120
NotifyAccess=main
StateDirectory=captionkit
LogsDirectory=captionkit
StandardOutput=append:$LOG_DIR/agent-%i.log
StandardError=inherit
NoNewPrivileges=yes
ProtectSystem=full
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
UNIT
cat > "$ROOT$UNIT_DIR/captionkit-give-up.service" <<UNIT
[Unit]
Description=CaptionKit: the agent cannot stay up; report it and have the group replace this instance

[Service]
Type=oneshot
ExecStart=/bin/bash $SRC_ON_HOST/stacks/boot/give_up.sh "an agent failed 5 times in 15 minutes: see $LOG_DIR/agent-<GPU>.log"
UNIT
systemctl daemon-reload
AGENTS=()
for (( gpu = 0; gpu < GPUS; gpu++ )); do AGENTS+=("captionkit-agent@$gpu.service"); done
systemctl enable --now "${AGENTS[@]}"
phase start
echo "captionkit bootstrap: done $(date -u +%FT%TZ)"
