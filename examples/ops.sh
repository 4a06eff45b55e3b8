#!/usr/bin/env bash
# An operator's day-to-day calls, with `buf curl` over server reflection
# (no proto files needed). The ops token is the `ops:` entry of
# BILLING_CALLER_TOKENS.
#
#   OPS_TOKEN=... examples/ops.sh parked
#   OPS_TOKEN=... examples/ops.sh retry evt_123
#   OPS_TOKEN=... examples/ops.sh reconcile [org id]      # a dry run
#   OPS_TOKEN=... examples/ops.sh reconcile-apply [org id]
#   OPS_TOKEN=... examples/ops.sh import-dry-run
#   OPS_TOKEN=... examples/ops.sh audit <org id>
#   OPS_TOKEN=... examples/ops.sh endpoints
#   OPS_TOKEN=... examples/ops.sh add-endpoint <url> [event type,...]
#   OPS_TOKEN=... examples/ops.sh deliveries <endpoint id>
#   OPS_TOKEN=... examples/ops.sh resume-endpoint <endpoint id>
#   OPS_TOKEN=... examples/ops.sh rotate-secret <endpoint id> <key>   # the same key again: no second rotation
#   OPS_TOKEN=... examples/ops.sh events [last event id]   # streams; Ctrl-C ends it
#
# BILLING_ADDR defaults to http://127.0.0.1:50051.
set -euo pipefail

addr=${BILLING_ADDR:-http://127.0.0.1:50051}
: "${OPS_TOKEN:?set OPS_TOKEN to the ops token}"

call() {
  local method=$1 body=$2
  npx --yes @bufbuild/buf@1.75.0 curl --protocol grpc --http2-prior-knowledge \
    -H "authorization: Bearer $OPS_TOKEN" -d "$body" "$addr/billing.v1.$method"
}

case ${1:-} in
  parked) call BillingService/ListParkedStripeEvents '{"limit": 50}' ;;
  retry) call BillingService/RetryStripeEvent "{\"event_id\": \"${2:?event id}\"}" ;;
  reconcile) call BillingService/ReconcileStripe "{\"org_id\": \"${2:-}\", \"dry_run\": true}" ;;
  reconcile-apply) call BillingService/ReconcileStripe "{\"org_id\": \"${2:-}\", \"dry_run\": false}" ;;
  import-dry-run) call BillingService/ImportStripeCustomers '{"dry_run": true}' ;;
  audit) call OrgAdminService/ListAuditEvents "{\"org_id\": \"${2:?org id}\"}" ;;
  endpoints) call EventService/ListWebhookEndpoints '{}' ;;
  add-endpoint)
    types=$(printf '%s' "${3:-}" | python3 -c 'import json,sys; print(json.dumps([t for t in sys.stdin.read().split(",") if t]))')
    call EventService/CreateWebhookEndpoint "{\"url\": \"${2:?url}\", \"event_types\": $types}"
    ;;
  deliveries) call EventService/ListWebhookDeliveries "{\"endpoint_id\": \"${2:?endpoint id}\"}" ;;
  resume-endpoint) call EventService/ResumeWebhookEndpoint "{\"endpoint_id\": \"${2:?endpoint id}\"}" ;;
  rotate-secret)
    call EventService/RotateWebhookEndpointSecret \
      "{\"endpoint_id\": \"${2:?endpoint id}\", \"idempotency_key\": \"${3:?a key naming this rotation}\"}"
    ;;
  events)
    if [[ -n ${2:-} ]]; then
      call EventService/WatchBillingEvents "{\"from_event_id\": \"$2\"}"
    else
      call EventService/WatchBillingEvents '{"from_oldest": true}'
    fi
    ;;
  *)
    sed -n '2,19p' "$0" >&2
    exit 2
    ;;
esac
