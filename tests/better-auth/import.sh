#!/usr/bin/env bash
# End-to-end test of `servauth import better-auth`, with real software on both sides:
#   1. a real Better Auth 1.7.25 (import-server.mjs) on a fresh database, its schema made by
#      Better Auth's getMigrations(); the unmodified client (import-check.mjs, phase seed)
#      signs 4 users up and in: 5 live sessions (one from rememberMe: false, one kept as a
#      bearer token), one signed out; a non-ASCII password, one shorter than servauth's
#      sign-up minimum; one more session aged past its expiry straight in the database;
#   2. Better Auth stops; `servauth import better-auth --from <its db> --dry-run` into a fresh
#      servauth database, then the same without --dry-run: both exit 0 with `imported: 4 users,
#      5 sessions; already present: 0 users, 0 sessions; skipped: 1 expired sessions, …;
#      refused: 0` (so the dry run wrote nothing);
#   3. servauth serves with the same secret: every old cookie / bearer token is the same user
#      (the Better Auth id) and session, the signed-out and expired ones are dead, every
#      password signs in and a wrong one fails (phase verify);
#   4. the import again: exit 0, nothing imported, everything already present; the old
#      cookies still work.
# For each source {PostgreSQL, SQLite file} x each target {SQLite, PostgreSQL}. Databases are
# made and dropped through SERVAUTH_TEST_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres); processes and files are cleaned up on exit.
# Any failure exits non-zero.
#
# Usage: bash tests/better-auth/import.sh path/to/servauth
#        IMPORT_SOURCES="sqlite" IMPORT_TARGETS="postgres" bash tests/better-auth/import.sh BIN
#             (a subset; each defaults to "postgres sqlite")
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
binary=${1:?usage: tests/better-auth/import.sh path/to/servauth}
[ -x "$binary" ] || { echo "not an executable: $binary" >&2; exit 2; }
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
postgres_admin=${SERVAUTH_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
sources=${IMPORT_SOURCES:-postgres sqlite}
targets=${IMPORT_TARGETS:-sqlite postgres}
step_timeout=${IMPORT_STEP_TIMEOUT:-120}
export BETTER_AUTH_SECRET="servauth-better-auth-import-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

command -v node >/dev/null || { echo "node is required" >&2; exit 1; }
command -v psql >/dev/null || { echo "psql is required" >&2; exit 1; }

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

# stop PID: SIGTERM, wait for it to exit, and forget it.
stop() {
  local pid=$1 keep=() p
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# new_postgres TAG: makes a fresh database (dropped on exit); its URL in $postgres_url.
new_postgres() {
  local db
  db="$1_$(date +%s)_$$_$RANDOM"
  psql "$postgres_admin" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null || return 1
  databases+=("$db")
  postgres_url="${postgres_admin%/*}/$db"
}

# servauth_env DATABASE_URL PORT: the environment servauth runs with (as run.sh starts it),
# in the array $senv. The public URL is http, so the cookie is better-auth.session_token, as
# Better Auth (on http) set it; the same BETTER_AUTH_SECRET signs it.
servauth_env() {
  local database=$1 port=$2
  senv=(
    PATH="$PATH"
    DATABASE_URL="$database"
    SERVAUTH_LISTEN="127.0.0.1:$port"
    SERVAUTH_PUBLIC_URL="http://127.0.0.1:$port"
    SERVAUTH_BETTER_AUTH_SECRET="$BETTER_AUTH_SECRET"
    SERVAUTH_COOKIE_SECURE=false
    SERVAUTH_ARGON2_MEMORY_KIB=64
    SERVAUTH_ARGON2_ITERATIONS=1
    SERVAUTH_RATE_LIMIT=1000/1m
    SERVAUTH_LOGIN_FAILURE_LIMIT=1000/1m
    SERVAUTH_REFRESH_RATE_LIMIT=1000/1m
    SERVAUTH_LOG=warn
  )
}

# check PHASE NAME [VAR=VALUE…]: one phase of import-check.mjs under node --test.
check() {
  local phase=$1 name=$2
  shift 2
  echo "--- $name: node --test import-check.mjs (IMPORT_PHASE=$phase)"
  env "$@" IMPORT_PHASE="$phase" IMPORT_STATE="$state" \
    timeout "$step_timeout" node --test --test-reporter=spec "$here/import-check.mjs"
}

# run_import NAME RUN FROM DATABASE_URL [FLAG…]: the import, its rc/stdout/stderr kept under
# $work, judged by import-check.mjs (RUN: dry, first, second).
run_import() {
  local name=$1 run=$2 from=$3 database=$4 out="$work/$1-import-$2" rc=0
  shift 4
  echo "--- $name: servauth import better-auth --from $from${*:+ $*} ($run run)"
  servauth_env "$database" "$(free_port)"
  env -i "${senv[@]}" timeout "$step_timeout" \
    "$binary" import better-auth --from "$from" "$@" >"$out.stdout" 2>"$out.stderr" || rc=$?
  echo "$rc" >"$out.rc"
  echo "exit $rc; stdout:"
  sed 's/^/    /' "$out.stdout"
  if [ -s "$out.stderr" ]; then
    echo "stderr:"
    sed 's/^/    /' "$out.stderr" | head -n 40
  fi
  check summary "$name" SERVER_KIND=servauth IMPORT_RUN="$run" IMPORT_OUT="$out"
}

# start_servauth NAME DATABASE_URL: sets $base and $servauth_pid.
start_servauth() {
  local name=$1 database=$2 port log
  port=$(free_port)
  base="http://127.0.0.1:$port"
  log="$work/servauth-$name.log"
  servauth_env "$database" "$port"
  env -i "${senv[@]}" "$binary" serve >>"$log" 2>&1 &
  servauth_pid=$!
  pids+=("$servauth_pid")
  servauth_log=$log
  wait_for "$base/ready" "$servauth_pid" "$log"
}

# one_target SOURCE_KIND FROM TARGET_KIND: steps 2-4 into a fresh target database.
one_target() {
  local source=$1 from=$2 target=$3 name="$1-to-$3" database
  if [ "$target" = postgres ]; then
    new_postgres servauth_import || return 1
    database=$postgres_url
  else
    database="sqlite://$work/$name-servauth.db"
  fi
  run_import "$name" dry "$from" "$database" --dry-run || return 1
  run_import "$name" first "$from" "$database" || return 1
  start_servauth "$name" "$database" || return 1
  if ! check verify "$name" SERVER_KIND=servauth AUTH_BASE="$base" IMPORT_RUN=first; then
    echo "!!! tail of servauth's log:" >&2; tail -n 40 "$servauth_log" >&2; return 1
  fi
  stop "$servauth_pid"
  run_import "$name" second "$from" "$database" || return 1
  start_servauth "$name" "$database" || return 1
  if ! check verify "$name" SERVER_KIND=servauth AUTH_BASE="$base" IMPORT_RUN=second; then
    echo "!!! tail of servauth's log:" >&2; tail -n 40 "$servauth_log" >&2; return 1
  fi
  stop "$servauth_pid"
}

# one_source SOURCE_KIND: step 1 on a fresh Better Auth database, then every target.
one_source() {
  local source=$1 from port ba_base log pid target
  if [ "$source" = postgres ]; then
    new_postgres ba_import || return 1
    from=$postgres_url
  else
    from="$work/better-auth-source.db"
  fi
  port=$(free_port)
  ba_base="http://127.0.0.1:$port"
  log="$work/better-auth-$source.log"
  echo "=== Better Auth on $source ($from)"
  env -u NODE_ENV HOST=127.0.0.1 PORT="$port" BETTER_AUTH_URL="$ba_base" BA_DATABASE="$from" \
    node "$here/import-server.mjs" >"$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_for "$ba_base/api/auth/ok" "$pid" "$log" || return 1
  state="$work/state-$source.json"
  if ! check seed "$source" SERVER_KIND=better-auth AUTH_BASE="$ba_base" BA_DATABASE="$from"; then
    echo "!!! Better Auth's log:" >&2; tail -n 40 "$log" >&2; return 1
  fi
  stop "$pid"
  for target in $targets; do
    echo "=== import: Better Auth on $source -> servauth on $target"
    # The SQLite source once as a plain path, once as sqlite://path.
    local given=$from
    [ "$source" = sqlite ] && [ "$target" = postgres ] && given="sqlite://$from"
    if one_target "$source" "$given" "$target"; then
      results+=("pass  $source -> $target")
    else
      results+=("FAIL  $source -> $target")
      failed=1
    fi
  done
}

# The client and the drivers (pg, better-sqlite3: built from source, a couple of minutes the
# first time), unless node_modules already matches package.json.
if ! (cd "$here" && npm ls --depth=0 >/dev/null 2>&1 && node -e 'new (require("better-sqlite3"))(":memory:")' 2>/dev/null); then
  echo "--- npm ci (better-auth, pg, better-sqlite3 pinned in $here/package-lock.json)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

started=$SECONDS
failed=0
results=()
state=""
for source in $sources; do
  if ! one_source "$source"; then
    results+=("FAIL  Better Auth on $source (seed)")
    failed=1
  fi
done

echo "--- servauth import better-auth, end to end: $((SECONDS - started)) s"
printf '    %s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
  echo "!!! the Better Auth import test failed (see above)" >&2
  exit 1
fi
echo "the Better Auth import test passed: sources [$sources] x targets [$targets]"
