#!/usr/bin/env bash
# Usage: bench/ab.sh OLD_BINARY NEW_BINARY   (ROUNDS=8 BURST=3s SCRIPTS="validate me"
#   CONNS="64 256" USERS=200; OLD_ENV/NEW_ENV: extra settings for one side, e.g.
#   OLD_ENV="SERVAUTH_SESSION_CACHE=0" with one binary twice; SCRIPTS may name refresh (each burst loses up to CONNS tokens in
#   flight: seed USERS > ROUNDS x CONNS); needs wrk, psql, python3)
# Interleaved A/B of two servauth binaries on PostgreSQL (BACKEND=sqlite: each on its own
# SQLite file): both run at once (ports 4301/4302),
# and short wrk bursts alternate between them ROUNDS times, so that host noise (CPU steal,
# other processes) falls on both alike. Prints per-round req/s and the medians.
set -euo pipefail
OLD=$1 NEW=$2 ROUNDS=${ROUNDS:-8} BURST=${BURST:-3s} SCRIPTS=${SCRIPTS:-validate me} CONNS=${CONNS:-64 256}
B="$(cd "$(dirname "$0")" && pwd)"; export LUA_DIR=$B/lua INTERNAL_SECRET="bench-internal-secret-0123456789abcdef0123"
W=$(mktemp -d)
BACKEND=${BACKEND:-postgres}
db_url() { if [ "$BACKEND" = sqlite ]; then echo "sqlite://$W/ab_$1.db"; else echo "postgres://postgres@127.0.0.1:5432/ab_$1"; fi; }
if [ "$BACKEND" = postgres ]; then
  for v in old new; do psql -q postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE IF EXISTS ab_$v" -c "CREATE DATABASE ab_$v" >/dev/null; done
fi
start() { # version binary port
  local extra=${OLD_ENV:-}; [ "$1" = new ] && extra=${NEW_ENV:-}
  # shellcheck disable=SC2086 # extra is a list of NAME=value words
  env -i PATH="$PATH" DATABASE_URL="$(db_url "$1")" SERVAUTH_LISTEN=127.0.0.1:$3 \
    SERVAUTH_PUBLIC_URL=http://127.0.0.1:$3 SERVAUTH_INTERNAL_SECRET="$INTERNAL_SECRET" SERVAUTH_COOKIE_SECURE=false \
    SERVAUTH_LOG=warn SERVAUTH_ACCESS_TTL=1h SERVAUTH_RATE_LIMIT=1000000/1s SERVAUTH_REFRESH_RATE_LIMIT=1000000/1s \
    SERVAUTH_LOGIN_FAILURE_LIMIT=1000000/1s SERVAUTH_ARGON2_MEMORY_KIB=64 SERVAUTH_ARGON2_ITERATIONS=1 $extra "$2" serve > $W/$1.log 2>&1 &
  echo $! > $W/$1.pid
  for _ in $(seq 1 100); do curl -fs -o /dev/null http://127.0.0.1:$3/ready && return; sleep 0.1; done; echo "no start $1"; exit 1
}
start old "$OLD" 4301; start new "$NEW" 4302
for v in old new; do port=4301; [ $v = new ] && port=4302; mkdir -p $W/$v; python3 $B/seed.py http://127.0.0.1:$port $W/$v ${USERS:-200} 4 >/dev/null; done
trap 'kill $(cat $W/old.pid) $(cat $W/new.pid) 2>/dev/null; sleep 1; for v in old new; do psql -q postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE IF EXISTS ab_$v" >/dev/null 2>&1; done' EXIT
for script in $SCRIPTS; do
  for c in $CONNS; do
    for r in $(seq 1 $ROUNDS); do
      for v in old new; do port=4301; [ $v = new ] && port=4302
        # refresh.lua uses each token once and writes the successors for the next burst.
        rps=$(DATA_DIR=$W/$v BENCH_JSON=/dev/null WRK_THREADS=2 REFRESH_IN=$W/$v/refresh.txt REFRESH_OUT=$W/$v/refresh.next \
          wrk -t2 -c$c -d$BURST -s $LUA_DIR/$script.lua http://127.0.0.1:$port 2>/dev/null | grep '^SUMMARY' | sed 's/.*rps=\([0-9.]*\).*/\1/')
        if [ -s $W/$v/refresh.next ]; then mv $W/$v/refresh.next $W/$v/refresh.txt; fi
        echo "$script c$c $v $rps" | tee -a $W/rounds.txt
      done
    done
  done
done
python3 - "$W/rounds.txt" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    script, conns, version, rps = line.split()
    runs[(script, conns, version)].append(float(rps))
for script, conns in sorted({(s, c) for s, c, _ in runs}):
    old, new = runs[(script, conns, "old")], runs[(script, conns, "new")]
    pairs = ", ".join(f"{n / o:.2f}" for o, n in zip(old, new))
    print(f"{script} {conns}: old {statistics.median(old):.0f}/s, new {statistics.median(new):.0f}/s, "
          f"new/old {statistics.median(new) / statistics.median(old):.3f} (pairs {pairs})")
PY
