#!/usr/bin/env bash
# CaptionKit worker boot: install the runtime into a venv, write the agent's config, start it under systemd.
# Run by user data from the unpacked runtime bundle. Inputs (environment):
#   CAPTIONKIT_AGENT_CONFIG     the agent config as JSON (the stack renders it)
#   CAPTIONKIT_TORCH_INDEX_URL  the CUDA wheel index for torch (e.g. https://download.pytorch.org/whl/cu128)
#   CAPTIONKIT_PYTHON           the interpreter for the venv (default python3.11, installed with dnf if missing)
#   ROOT                        prefix for every path written (tests run the script against a temporary root)
set -euo pipefail

ROOT="${ROOT:-}"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${CAPTIONKIT_PYTHON:-python3.11}"
VENV=/opt/captionkit/venv
CONFIG=/etc/captionkit/agent.json
UNIT=/etc/systemd/system/captionkit-agent.service
CWAGENT_CONFIG=/opt/aws/amazon-cloudwatch-agent/etc/captionkit.json
LOG_DIR=/var/log/captionkit
export PATH="$PATH:/opt/aws/amazon-cloudwatch-agent/bin"

mkdir -p "$ROOT$LOG_DIR"
exec > >(tee -a "$ROOT$LOG_DIR/bootstrap.log") 2>&1
trap 'echo "captionkit bootstrap: FAILED at line $LINENO (exit $?); see $LOG_DIR/bootstrap.log" >&2' ERR
echo "captionkit bootstrap: start $(date -u +%FT%TZ) from $SRC"

: "${CAPTIONKIT_AGENT_CONFIG:?the agent config JSON is required}"
: "${CAPTIONKIT_TORCH_INDEX_URL:?the torch wheel index URL is required}"
TORCH_PIN="$(grep -E '^torch==' "$SRC/requirements/runtime.txt")"

# 1. system packages and the service user
missing=()
command -v "$PYTHON" >/dev/null || missing+=("$PYTHON")
command -v amazon-cloudwatch-agent-ctl >/dev/null || missing+=(amazon-cloudwatch-agent)
if ((${#missing[@]})); then dnf install -y "${missing[@]}"; fi
id -u captionkit >/dev/null 2>&1 || useradd --system --home-dir /var/lib/captionkit --shell /sbin/nologin captionkit

# 2. the virtual environment: torch from its CUDA index first, then the rest from PyPI (torch stays)
"$PYTHON" -m venv "$ROOT$VENV"
"$ROOT$VENV/bin/python" -m pip install --progress-bar off --index-url "$CAPTIONKIT_TORCH_INDEX_URL" "$TORCH_PIN"
"$ROOT$VENV/bin/python" -m pip install --progress-bar off -r "$SRC/requirements/runtime.txt"

# 3. the agent's config, checked for the keys the agent needs
mkdir -p "$ROOT$(dirname "$CONFIG")"
STOP_TIMEOUT_S="$(python3 - "$ROOT$CONFIG" <<'PY'
import json, os, sys
config = json.loads(os.environ["CAPTIONKIT_AGENT_CONFIG"])
required = ["queue_url", "region", "artifacts_bucket", "model_pointer", "results_bucket", "results_prefix",
            "images_bucket", "images_prefix", "image_suffixes", "batch_size", "visibility_timeout_s", "device",
            "compiled_cache_prefix", "asg_name", "lifecycle_hook_name", "metrics_namespace", "log_group"]
missing = [key for key in required if key not in config]
if missing:
    sys.exit(f"CAPTIONKIT_AGENT_CONFIG lacks {missing}")
with open(sys.argv[1], "w") as out:
    json.dump(config, out, indent=2, sort_keys=True)
print(int(config["visibility_timeout_s"]))
PY
)"
chmod 0640 "$ROOT$CONFIG"
chown root:captionkit "$ROOT$CONFIG"

# 4. logs: the CloudWatch agent ships boot and agent logs to the stack's log group
mkdir -p "$ROOT$(dirname "$CWAGENT_CONFIG")"
python3 - "$ROOT$CONFIG" "$ROOT$CWAGENT_CONFIG" "$LOG_DIR" <<'PY'
import json, sys
config_path, out_path, log_dir = sys.argv[1:]
group = json.load(open(config_path))["log_group"]
files = [{"file_path": f"{log_dir}/{name}.log", "log_group_name": group, "log_stream_name": f"{{instance_id}}/{name}"}
         for name in ("bootstrap", "agent")]
json.dump({"logs": {"logs_collected": {"files": {"collect_list": files}}}}, open(out_path, "w"), indent=2)
PY
amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c "file:$CWAGENT_CONFIG"

# 5. the agent under systemd: restart on failure; on stop, SIGTERM and time to finish the batch
mkdir -p "$ROOT$(dirname "$UNIT")"
cat > "$ROOT$UNIT" <<UNIT
[Unit]
Description=CaptionKit captioning agent
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User=captionkit
Group=captionkit
WorkingDirectory=$SRC
Environment=PYTHONPATH=$SRC PYTHONUNBUFFERED=1 HOME=/var/lib/captionkit
ExecStart=$VENV/bin/python -m runtime agent --config $CONFIG
Restart=on-failure
RestartSec=10
KillSignal=SIGTERM
TimeoutStopSec=$STOP_TIMEOUT_S
StateDirectory=captionkit
LogsDirectory=captionkit
StandardOutput=append:$LOG_DIR/agent.log
StandardError=inherit
NoNewPrivileges=yes
ProtectSystem=full
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now captionkit-agent.service
echo "captionkit bootstrap: done $(date -u +%FT%TZ)"
