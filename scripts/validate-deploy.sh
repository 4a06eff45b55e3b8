#!/usr/bin/env bash
# Renders the Kubernetes manifests (deploy/base, kustomize) and validates
# every resource against the API schemas of the oldest Kubernetes version
# they target, strictly (unknown fields are errors). CI runs it.
#
# Needs kubectl (its built-in kustomize) and python3; kubernetes-validate
# comes from PyPI into a virtualenv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

kubernetes_version=1.30.0

if ! cmp -s catalogs/default.toml deploy/base/catalog.toml; then
  echo "deploy/base/catalog.toml differs from catalogs/default.toml" >&2
  exit 1
fi
if ! command -v kubectl >/dev/null; then
  echo "kubectl is needed to render deploy/base (kubectl kustomize)" >&2
  exit 1
fi

venv=target/deploy-validate-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi

rendered=$(mktemp --suffix=.yaml)
trap 'rm -f "$rendered"' EXIT
kubectl kustomize deploy/base >"$rendered"
"$venv/bin/kubernetes-validate" --strict --quiet -k "$kubernetes_version" "$rendered"
echo "deploy/base: $(grep -c '^kind:' "$rendered") resources render and validate against Kubernetes $kubernetes_version"
