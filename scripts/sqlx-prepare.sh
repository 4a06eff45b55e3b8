#!/usr/bin/env bash
# Regenerates the committed `.sqlx/` offline query data, or with --check
# verifies it is current, without needing sqlx-cli.
#
# It builds a scratch database from migrations/, compiles the crate with the
# query macros online (they write one JSON file per query into
# SQLX_OFFLINE_DIR), and replaces (or compares with) `.sqlx/`.
#
#   scripts/sqlx-prepare.sh           # regenerate .sqlx/
#   scripts/sqlx-prepare.sh --check   # fail if .sqlx/ is stale
#
# PostgreSQL: PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

admin_url=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=billing_sqlx_prepare
db_url="${admin_url%/*}/$db"

psql "$admin_url" -qX -v ON_ERROR_STOP=1 \
  -c "drop database if exists $db with (force)" -c "create database $db" >/dev/null
for migration in migrations/*.sql; do
  psql "$db_url" -qX -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The macros only write their data when they expand, so force the crate to rebuild.
touch src/lib.rs
DATABASE_URL=$db_url SQLX_OFFLINE=false SQLX_OFFLINE_DIR=$out cargo check --quiet --all-targets
touch src/lib.rs

if [[ ${1:-} == --check ]]; then
  if ! diff -r "$out" .sqlx >/dev/null 2>&1; then
    echo "sqlx-prepare: .sqlx/ is stale; run scripts/sqlx-prepare.sh and commit the result" >&2
    diff -r "$out" .sqlx | head -20 >&2 || true
    exit 1
  fi
  echo "sqlx-prepare: .sqlx/ is current"
else
  rm -rf .sqlx
  mkdir -p .sqlx
  cp "$out"/*.json .sqlx/
  echo "sqlx-prepare: wrote $(ls .sqlx | wc -l) queries to .sqlx/"
fi
