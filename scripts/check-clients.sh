#!/usr/bin/env bash
# The TypeScript client cannot rot: its dependencies install from the lock
# file, the generated code is regenerated from proto/ and must match what
# is committed, and the client and the BFF example type-check. CI runs it.
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"

npm ci --no-audit --no-fund --loglevel=error
npm run --silent generate
if ! git diff --quiet -- src/gen || [ -n "$(git ls-files --others --exclude-standard -- src/gen)" ]; then
  echo "clients/typescript/src/gen is stale: run 'npm run generate' in clients/typescript" >&2
  git status --short -- src/gen >&2
  exit 1
fi
npx --no-install tsc --noEmit
echo "clients/typescript: generated code current; client and BFF example type-check"
