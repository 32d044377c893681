#!/usr/bin/env bash
# Property-based API tests with Schemathesis: a real servauth (the binary given) answers
# generated requests, valid and invalid, on every operation of its own /openapi.json, and
# every answer must be neither a 5xx nor anything the document does not allow.
#
# Usage: .ci/schemathesis.sh target/debug/servauth [more `schemathesis run` options, e.g. --seed 1]
# Bounds: SCHEMATHESIS_MAX_EXAMPLES (default 100 per operation and phase) and
# SCHEMATHESIS_TIMEOUT (default 300 s for the whole run, which then fails).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
# Every check of Schemathesis except two:
# - positive_data_acceptance: schema-valid data is refused where valid means knowing a secret
#   (a link's single-use token, the account's password, a live refresh token) or passing rules
#   no schema can state (a common password, a taken email); those 4xx are right.
# - object_level_authorization: needs a second set of credentials declared as peers (Web
#   Fuzzing Commons auth); sessions of another user are covered by the suite instead.
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance
CHECKS+=,response_headers_conformance,response_schema_conformance,negative_data_rejection
CHECKS+=,missing_required_header,unsupported_method,allow_header_conformance
CHECKS+=,use_after_free,ensure_resource_availability,ignored_auth

binary=${1:?usage: .ci/schemathesis.sh path/to/servauth [schemathesis run options]}
shift
[ -x "$binary" ] || { echo "not an executable: $binary" >&2; exit 2; }

venv=${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/servauth/schemathesis-$SCHEMATHESIS_VERSION}
schemathesis="$venv/bin/schemathesis"
if ! "$schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
server=""
stop() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')

# A clean environment: only what this run sets reaches the server. The rate limits are
# raised: the fuzzer's own auth step logs in again and again from one address, and the
# limits themselves (429 is documented) are exercised by the test suite.
env -i PATH="$PATH" \
  SERVAUTH_RATE_LIMIT=1000000/1m \
  SERVAUTH_LOGIN_FAILURE_LIMIT=1000000/1m \
  SERVAUTH_REFRESH_RATE_LIMIT=1000000/1m \
  DATABASE_URL="sqlite://$work/servauth.db" \
  SERVAUTH_LISTEN="127.0.0.1:$port" \
  SERVAUTH_PUBLIC_URL="$base" \
  SERVAUTH_INTERNAL_SECRET="$secret" \
  SERVAUTH_ARGON2_MEMORY_KIB=64 \
  SERVAUTH_ARGON2_ITERATIONS=1 \
  SERVAUTH_COOKIE_SECURE=false \
  SERVAUTH_LOG=warn \
  "$binary" serve >"$work/server.log" 2>&1 &
server=$!

for _ in $(seq 1 100); do
  curl -sf "$base/ready" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; echo "servauth did not start" >&2; exit 1; }
  sleep 0.2
done
curl -sf "$base/ready" >/dev/null || { cat "$work/server.log" >&2; echo "servauth is not ready" >&2; exit 1; }

# One account, so that the operations behind credentials are exercised past the 401: a bearer
# token fetched again whenever one is refused (the tests log out and revoke sessions), and a
# browser session's refresh cookie with its CSRF token.
email=schemathesis@example.com
password='correct horse battery staple'
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
curl -sf "$base/auth/register" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"$password\",\"client\":\"native\"}" >/dev/null
login=$(curl -sf -D "$work/login.headers" "$base/auth/login" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"$password\"}")
csrf=$(json '["csrf_token"]' <<<"$login")
refresh=$(sed -n 's/^[Ss]et-[Cc]ookie: servauth_refresh=\([^;]*\);.*/\1/p' "$work/login.headers")
[ -n "$refresh" ] && [ -n "$csrf" ] || { echo "browser login gave no refresh cookie" >&2; exit 1; }

# No state kept between runs (each has its own server and port), and none written to the
# working directory (Hypothesis' goes to $work as well).
cat >"$work/schemathesis.toml" <<EOF
[cache]
enabled = false

[auth]
auto-signup = false

[auth.openapi.service_auth]
api_key = "$secret"

[auth.openapi.refresh_cookie]
api_key = "$refresh"

[auth.openapi.csrf_token]
api_key = "$csrf"

# Forward-auth answers every method an app's request may have (a gateway may send the
# original one) but TRACE and CONNECT; the document lists it once, as GET, so TRACE is the one
# undeclared method tried there.
[[operations]]
include-path = "/api/internal/authorize"
phases.coverage.unexpected-methods = ["TRACE"]

[auth.dynamic.openapi.bearer]
path = "/auth/login"
payload = { email = "$email", password = "$password", client = "native" }
extract_selector = "/access_token"
EOF

# One worker: Hypothesis trips over itself in threads on this Python ("AST constructor
# recursion depth mismatch"), which aborts the run.
status=0
HYPOTHESIS_STORAGE_DIRECTORY="$work/hypothesis" timeout --kill-after=15 "${SCHEMATHESIS_TIMEOUT:-300}" \
  "$schemathesis" --no-color --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
  --checks "$CHECKS" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}" \
  --workers 1 \
  --request-timeout 10 \
  --generation-database none \
  "$@" || status=$?
if [ "$status" -eq 124 ]; then
  echo "schemathesis did not finish within ${SCHEMATHESIS_TIMEOUT:-300}s" >&2
fi

# A failure the responses hid (an error logged, a panic caught) fails the run as well.
if grep -E '"level":"ERROR"|panicked' "$work/server.log" >&2; then
  echo "servauth logged errors during the run (above)" >&2
  status=1
fi
exit "$status"
