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
  *)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
