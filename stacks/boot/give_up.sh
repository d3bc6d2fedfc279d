#!/usr/bin/env bash
# A worker that cannot serve: count it (metric WorkerFailures, which alarms), back off, then mark this instance
# Unhealthy so the auto scaling group replaces it. The back-off doubles with each failure of the group in the
# last hour (300 s, 600 s ... at most an hour), so a configuration that can never work does not cycle GPU
# instances every minute. Called by bootstrap.sh on a failed boot and by captionkit-give-up.service when
# systemd stops restarting the agent. Usage: give_up.sh REASON
# Environment: CAPTIONKIT_AGENT_CONFIG (else /etc/captionkit/agent.json), CAPTIONKIT_FAILURE_HOLD_S (300),
#              CAPTIONKIT_IMDS_URL (http://169.254.169.254), ROOT (the tests' temporary root).
set -uo pipefail
REASON="${1:-unknown}"
ROOT="${ROOT:-}"
LOG_DIR=/var/log/captionkit
IMDS="${CAPTIONKIT_IMDS_URL-http://169.254.169.254}"
HOLD_S="${CAPTIONKIT_FAILURE_HOLD_S:-300}"
MAX_HOLD_S=3600
METRIC=WorkerFailures  # stacks/alarms.py alarms on this name (tests/stacks/test_boot.py checks they agree)
mkdir -p "$ROOT$LOG_DIR"
exec > >(tee -a "$ROOT$LOG_DIR/give-up.log") 2>&1

config="${CAPTIONKIT_AGENT_CONFIG:-$(cat "$ROOT/etc/captionkit/agent.json" 2>/dev/null || echo '{}')}"
read -r ASG REGION NAMESPACE < <(CONFIG="$config" python3 -c '
import json, os
try:
    c = json.loads(os.environ["CONFIG"])
except ValueError:
    c = {}
print(c.get("asg_name") or "-", c.get("region") or "-", c.get("metrics_namespace") or "CaptionKit")')
token="$(curl -sf -m 5 -X PUT "$IMDS/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")"
instance="$(curl -sf -m 5 -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/meta-data/instance-id")"
[[ "$REGION" == - ]] && REGION="$(curl -sf -m 5 -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/meta-data/placement/region")"
dims="AutoScalingGroupName=$ASG"

recent="$(aws cloudwatch get-metric-statistics --region "$REGION" --namespace "$NAMESPACE" --metric-name "$METRIC" \
  --dimensions "Name=AutoScalingGroupName,Value=$ASG" --statistics Sum --period 3600 \
  --start-time "$(date -u -d '-1 hour' +%FT%TZ)" --end-time "$(date -u +%FT%TZ)" \
  --query 'Datapoints[0].Sum' --output text 2>/dev/null)"
[[ "$recent" =~ ^[0-9]+(\.[0-9]+)?$ ]] || recent=0
aws cloudwatch put-metric-data --region "$REGION" --namespace "$NAMESPACE" --metric-name "$METRIC" \
  --dimensions "$dims" --value 1 --unit Count
hold=$(( HOLD_S << (${recent%.*} < 4 ? ${recent%.*} : 4) ))
(( hold > MAX_HOLD_S )) && hold=$MAX_HOLD_S
echo "captionkit give-up: $REASON; ${recent%.*} failure(s) in group $ASG in the last hour;" \
  "marking ${instance:-this instance} Unhealthy in $hold s"
sleep "$hold"
if [[ -z "$instance" ]]; then
  echo "captionkit give-up: no instance id from instance metadata ($IMDS); cannot mark this instance" >&2
  exit 1
fi
aws autoscaling set-instance-health --region "$REGION" --instance-id "$instance" --health-status Unhealthy \
  --no-should-respect-grace-period
echo "captionkit give-up: $instance marked Unhealthy; the group will replace it"
