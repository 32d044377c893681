#!/usr/bin/env bash
# One test suite, two servers: the unmodified better-auth@1.7.25 client (node --test,
# client.test.mjs + wire.test.mjs) against
#   1. a real Better Auth server (reference-server.mjs, in memory),
#   2. servauth on a fresh SQLite file,
#   3. servauth on a fresh PostgreSQL database (made and dropped through
#      SERVAUTH_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres).
# servauth's mail goes to mailbox.mjs (an SMTP server on loopback) so reset and verification
# links can be followed. Any failure exits non-zero.
#
# Usage: bash tests/better-auth/run.sh path/to/servauth      all three runs
#        bash tests/better-auth/run.sh --reference-only       only the Better Auth run
#        bash tests/better-auth/run.sh --servauth-only path/to/servauth   only the two servauth runs
#        bash tests/better-auth/run.sh --probe path/to/servauth
#             exit 0 when that binary answers GET /api/auth/ok (its Better Auth face exists), else 1
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mode=all
case "${1:-}" in
  --probe) mode=probe; shift ;;
  --reference-only) mode=reference; shift ;;
  --servauth-only) mode=servauth; shift ;;
esac
binary=""
if [ "$mode" != reference ]; then
  binary=${1:?usage: tests/better-auth/run.sh [--probe|--servauth-only] path/to/servauth, or --reference-only}
  [ -x "$binary" ] || { echo "not an executable: $binary" >&2; exit 2; }
  binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
fi
postgres_admin=${SERVAUTH_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
# Per suite run (each takes 10-30 s); the whole script stays under 3 minutes.
suite_timeout=${BETTER_AUTH_SUITE_TIMEOUT:-75}
# The cookie-signing secret, shared by the servers and the suite (it checks the HMAC bytes).
export BETTER_AUTH_SECRET="servauth-better-auth-tests-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
# servauth's /api/internal/* secret, for servauth.test.mjs (validate).
export SERVAUTH_INTERNAL_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"

work=$(mktemp -d)
pids=()
databases=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  local db
  for db in "${databases[@]}"; do
    psql "$postgres_admin" -qX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 \
      || echo "could not drop database $db" >&2
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for URL PID LOG: until URL answers 2xx; fails (with the log) when PID exits or after 30 s.
wait_for() {
  local url=$1 pid=$2 log=$3
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "$url" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the server exited before $url answered; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "$url did not answer within 30 s; the server's log:" >&2
  cat "$log" >&2
  return 1
}

# start_servauth NAME DATABASE_URL [SMTP_PORT]: sets $base and pushes the pid.
start_servauth() {
  local name=$1 database=$2 smtp=${3:-}
  local port
  port=$(free_port)
  base="http://127.0.0.1:$port"
  local log="$work/servauth-$name.log"
  env -i PATH="$PATH" \
    DATABASE_URL="$database" \
    SERVAUTH_LISTEN="127.0.0.1:$port" \
    SERVAUTH_PUBLIC_URL="$base" \
    SERVAUTH_BETTER_AUTH_SECRET="$BETTER_AUTH_SECRET" \
    SERVAUTH_INTERNAL_SECRET="$SERVAUTH_INTERNAL_SECRET" \
    SERVAUTH_COOKIE_SECURE=false \
    SERVAUTH_ARGON2_MEMORY_KIB=64 \
    SERVAUTH_ARGON2_ITERATIONS=1 \
    SERVAUTH_RATE_LIMIT=1000/1m \
    SERVAUTH_LOGIN_FAILURE_LIMIT=1000/1m \
    SERVAUTH_REFRESH_RATE_LIMIT=1000/1m \
    ${smtp:+SERVAUTH_SMTP_URL=smtp://127.0.0.1:$smtp} \
    SERVAUTH_LOG=warn \
    "$binary" serve >"$log" 2>&1 &
  pids+=($!)
  servauth_log=$log
  wait_for "$base/ready" "$!" "$log"
}

# suite KIND BASE MAILBOX_URL LOG: runs the test files against BASE: client.test.mjs and
# wire.test.mjs on both servers, servauth-faces.mjs (both faces on one servauth) on servauth.
suite() {
  local kind=$1 url=$2 mailbox=$3 log=$4
  local files=("$here/client.test.mjs" "$here/wire.test.mjs")
  [ "$kind" = servauth ] && files+=("$here/servauth-faces.mjs")
  echo "--- node --test: SERVER_KIND=$kind AUTH_BASE=$url"
  if ! AUTH_BASE="$url" SERVER_KIND="$kind" MAILBOX_URL="$mailbox" \
      timeout "$suite_timeout" node --test --test-reporter=spec "${files[@]}"; then
    echo "!!! the suite failed against $kind ($url); tail of the server's log:" >&2
    tail -n 60 "$log" >&2 || true
    return 1
  fi
}

if [ "$mode" = probe ]; then
  start_servauth probe "sqlite://$work/probe.db"
  body=$(curl -s "$base/api/auth/ok" || true)
  if [ "$(printf '%s' "$body" | tr -d ' \n')" = '{"ok":true}' ]; then
    echo "probe: $binary answers /api/auth/ok"
    exit 0
  fi
  echo "probe: $binary does not answer GET /api/auth/ok with {\"ok\":true} (got: ${body:-nothing})" >&2
  exit 1
fi

command -v node >/dev/null || { echo "node is required" >&2; exit 1; }
echo "--- npm ci (better-auth pinned in $here/package-lock.json)"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
started=$SECONDS
failed=0

# 1. The real Better Auth.
if [ "$mode" != servauth ]; then
  ref_port=$(free_port)
  ref_base="http://127.0.0.1:$ref_port"
  ref_log="$work/reference.log"
  env -u NODE_ENV HOST=127.0.0.1 PORT="$ref_port" BETTER_AUTH_URL="$ref_base" BETTER_AUTH_SECRET="$BETTER_AUTH_SECRET" \
    node "$here/reference-server.mjs" >"$ref_log" 2>&1 &
  pids+=($!)
  wait_for "$ref_base/api/auth/ok" "$!" "$ref_log"
  suite better-auth "$ref_base" "$ref_base/__test/mail" "$ref_log" || failed=1
fi

if [ "$mode" = all ] || [ "$mode" = servauth ]; then
  smtp_port=$(free_port)
  mail_port=$(free_port)
  SMTP_PORT=$smtp_port HTTP_PORT=$mail_port node "$here/mailbox.mjs" >"$work/mailbox.log" 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$mail_port/" "$!" "$work/mailbox.log"
  mailbox="http://127.0.0.1:$mail_port/"

  # 2. servauth on a fresh SQLite file.
  start_servauth sqlite "sqlite://$work/servauth.db" "$smtp_port"
  suite servauth "$base" "$mailbox" "$servauth_log" || failed=1

  # 3. servauth on a fresh PostgreSQL database.
  db="servauth_better_auth_$(date +%s)_$$"
  psql "$postgres_admin" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null
  databases+=("$db")
  start_servauth postgres "${postgres_admin%/*}/$db" "$smtp_port"
  suite servauth "$base" "$mailbox" "$servauth_log" || failed=1
fi

echo "--- better-auth client suite: $((SECONDS - started)) s"
if [ "$failed" -ne 0 ]; then
  echo "!!! the Better Auth client suite failed (see above)" >&2
  exit 1
fi
case $mode in
  all) echo "the Better Auth client suite passed against Better Auth and servauth (SQLite, PostgreSQL)" ;;
  reference) echo "the Better Auth client suite passed against Better Auth (servauth not run)" ;;
  servauth) echo "the Better Auth client suite passed against servauth (SQLite, PostgreSQL; Better Auth not run)" ;;
esac
