#!/usr/bin/env bash
# Where servauth's memory goes (the profile behind bench/RESULTS.md § memory). For each
# malloc variant it starts a fresh servauth on a fresh SQLite file and samples its RSS:
# fresh; after SEED registrations; after a login flood (wrk c=16, PHASE seconds) and 10 s
# idle; with 10,000 open connections on /api/internal/validate (wrk, PHASE seconds); 10 s
# after they close. Also prints the malloc arenas (anonymous mappings > 4 MiB) after the
# login flood, and login/validate req/s (so a variant's speed cost shows).
#
#   bench/memory.sh                           # builtin (default)
#   VARIANTS="builtin jemalloc" PHASE=5 bench/memory.sh
#   VARIANTS="builtin:narenas:1" bench/memory.sh     # the built-in jemalloc, more options
#   VARIANTS="jemalloc:narenas:2,dirty_decay_ms:1000" bench/memory.sh   # any MALLOC_CONF
#
# `builtin` is the binary as built: jemalloc is the process's malloc (src/memory.rs), for
# SQLite's C allocations too, and `builtin:<options>` passes MALLOC_CONF to it. The other
# variants (Debian's libjemalloc2 / libmimalloc2.0 preloaded, glibc tunables) only take
# effect on a build without the `#[global_allocator]` and the unprefixed-malloc feature:
# the executable's own malloc wins over a preloaded one.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd .. && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/servauth"
PORT="${PORT:-4299}"
PHASE="${PHASE:-8}"
SEED="${SEED:-20}"
VARIANTS="${VARIANTS:-builtin}"
OUT="$PWD/results/memory-$(date -u +%Y%m%dT%H%M%SZ)"
URL="http://127.0.0.1:$PORT"
export INTERNAL_SECRET="bench-internal-secret-0123456789abcdef0123" LUA_DIR="$PWD/lua" BENCH_JSON=/dev/null
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; true' EXIT

rss() { ps -o rss= -p "$PID" | awk '{printf "%.1f", $1 / 1024}'; }
rps() { grep -o 'rps=[0-9.]*' | cut -d= -f2; }

variant_env() {
  case "$1" in
    builtin) echo "X_BENCH_VARIANT=builtin" ;;
    builtin:*) echo "MALLOC_CONF=${1#builtin:}" ;;
    glibc-mmap-threshold) echo "MALLOC_MMAP_THRESHOLD_=1048576" ;;
    glibc-arena-max-2) echo "MALLOC_ARENA_MAX=2" ;;
    jemalloc) echo "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2" ;;
    mimalloc) echo "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2" ;;
    jemalloc:*) echo "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=${1#jemalloc:}" ;;
    *) echo "unknown variant $1" >&2; exit 1 ;;
  esac
}

echo "| variant | fresh MiB | after $SEED registrations | after login flood | +10 s idle | login req/s | 10k conns: max MiB | validate req/s | 10 s after | arenas > 4 MiB after the flood (MiB each) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for v in $VARIANTS; do
  dir="$OUT/$v"; mkdir -p "$dir/data"
  env $(variant_env "$v") DATABASE_URL="sqlite://$dir/servauth.db" SERVAUTH_LISTEN="127.0.0.1:$PORT" \
    SERVAUTH_INTERNAL_SECRET="$INTERNAL_SECRET" SERVAUTH_COOKIE_SECURE=false SERVAUTH_LOG=warn \
    SERVAUTH_RATE_LIMIT=1000000/1s SERVAUTH_LOGIN_FAILURE_LIMIT=1000000/1s \
    "$BIN" serve > "$dir/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do curl -fs -o /dev/null "$URL/ready" && break; sleep 0.1; done
  sleep 2; fresh="$(rss)"
  python3 seed.py "$URL" "$dir/data" "$SEED" 4 > /dev/null; seeded="$(rss)"
  login="$(DATA_DIR="$dir/data" wrk -t2 -c16 -d"${PHASE}s" -s lua/login.lua "$URL" | rps)"
  flooded="$(rss)"
  arenas="$(awk '/^[0-9a-f]+-/ {r=$1} /^Rss:/ {if ($2 > 4096) printf "%d ", $2 / 1024}' "/proc/$PID/smaps")"
  sleep 10; idle="$(rss)"
  ( max=0; while kill -0 "$PID" 2>/dev/null; do r="$(ps -o rss= -p "$PID")"; [ "$r" -gt "$max" ] && max="$r" && echo "$max" > "$dir/max10k"; sleep 0.5; done ) &
  sampler=$!
  validate="$(DATA_DIR="$dir/data" wrk -t2 -c10000 -d"${PHASE}s" --timeout 30s -s lua/validate.lua "$URL" | rps)"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  max10k="$(awk '{printf "%.1f", $1 / 1024}' "$dir/max10k")"
  sleep 10; after="$(rss)"
  echo "| $v | $fresh | $seeded | $flooded | $idle | $login | $max10k | $validate | $after | $arenas |"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  sleep 2
done
