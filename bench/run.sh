#!/usr/bin/env bash
# Load benchmark of servauth on PostgreSQL and on SQLite, with the Better Auth peer
# (../shared/peers/better-auth) measured in the same run on the same machine and database.
# Loopback only; every load run is bounded by DURATION.
#
#   bench/run.sh                       # everything (~15 min with the defaults)
#   DURATION=20s bench/run.sh          # longer measured runs (default 10s)
#   BACKENDS=sqlite PEER=0 bench/run.sh
#
# Knobs (environment):
#   DURATION (10s)  WARMUP (3s)  SETTLE (2 s between runs)  SEED_USERS (200)
#   IDLE_QUIET (12 s without requests before an idle RSS snapshot)
#   BACKENDS ("postgres sqlite")   PEER (1 = run the peer's bench.sh too)  PEER_EXTRA (1: its c=1 rows)
#   HASH_CONNS ("1 16 64")         login and register, closed loop
#   TOKEN_CONNS ("64 256 1000 10000")  validate and GET /auth/me, closed loop
#   REFRESH_CONNS ("64 256 1000")  /auth/refresh, closed loop
#   OPEN_RATE (5000) OPEN_CONNS (10000)  the fixed-rate open-loop token rows (oha -q; 0: none)
#   FACE_CONNS ("64 256 1000")  GET /api/auth/get-session (Better Auth face), cookie and bearer,
#                  closed loop, as the peer's get-session rows ("": none)
#   LOGIN_LOADS ("0.35 0.7 2")     open-loop login at these fractions of the Argon2 limit
#   ARGON2_BENCH (1: measure the limit with the criterion bench; 0: use ARGON2_LIMIT=<hashes/s>)
#   SERVER_ENV ("")  extra VAR=value settings for servauth, e.g. "MALLOC_ARENA_MAX=2"
#   SERVAUTH_LOG (info: the default log level, one line per request to server.log)
#   PORT (4200)  BUILD (1)  CARGO_TARGET_DIR (../target)
#
# Writes results/<RUN_ID>/ (git-ignored): env.txt, bench.log, results.jsonl (one line per
# measured run), resources.jsonl (RSS, CPU split, connections), raw tool output per run,
# the peer's own results under peer/, and summary.md (printed at the end).
set -euo pipefail
cd "$(dirname "$0")"
BENCH_DIR="$PWD"
ROOT="$(cd .. && pwd)"

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
SETTLE="${SETTLE:-2}"
SEED_USERS="${SEED_USERS:-200}"
IDLE_QUIET="${IDLE_QUIET:-12}"
BACKENDS="${BACKENDS:-postgres sqlite}"
PEER="${PEER:-1}"
PEER_EXTRA="${PEER_EXTRA:-1}"
HASH_CONNS="${HASH_CONNS:-1 16 64}"
TOKEN_CONNS="${TOKEN_CONNS:-64 256 1000 10000}"
REFRESH_CONNS="${REFRESH_CONNS:-64 256 1000}"
OPEN_RATE="${OPEN_RATE:-5000}"
OPEN_CONNS="${OPEN_CONNS:-10000}"
LOGIN_LOADS="${LOGIN_LOADS-0.35 0.7 2}"
FACE_CONNS="${FACE_CONNS-64 256 1000}"
ARGON2_BENCH="${ARGON2_BENCH:-1}"
PORT="${PORT:-4200}"
SERVER_ENV="${SERVER_ENV:-}"
BUILD="${BUILD:-1}"
PEER_SRC="${PEER_SRC:-$ROOT/../shared/peers/better-auth}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_DB=servauth_bench
BIN="$CARGO_TARGET_DIR/release/servauth"
# The machine's ceiling: a bare axum "ok" handler (examples/bare_ok.rs), measured in each
# backend's run just before its token paths.
BARE_BIN="$CARGO_TARGET_DIR/release/examples/bare_ok"
BARE_PORT=$((PORT + 99))
URL="http://127.0.0.1:$PORT"
# Fixed, benchmark-only secret (>= 32 bytes) for /api/internal/*.
INTERNAL_SECRET="bench-internal-secret-0123456789abcdef0123"
# Fixed, benchmark-only secret (>= 32 bytes) for the Better Auth face's signed cookies.
BETTER_AUTH_SECRET="bench-better-auth-secret-0123456789abcdef01"
PASSWORD="correct horse battery staple"

RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$BENCH_DIR/results/$RUN_ID"
mkdir -p "$OUT"
export BENCH_JSON="$OUT/results.jsonl" LUA_DIR="$BENCH_DIR/lua" INTERNAL_SECRET
ulimit -n "$(ulimit -Hn)"
HZ="$(getconf CLK_TCK)"
NPROC="$(nproc)"
SERVER_PID=""

log() { echo "[bench $(date -u +%T)] $*" | tee -a "$OUT/bench.log" >&2; }
die() { log "FATAL: $*"; exit 1; }

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT

# ---- build -------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
  # The criterion bench first: it builds the server binary too, with the dev-dependencies'
  # features (tokio's test-util), and the plain release build must be the one left in place.
  if [ "$ARGON2_BENCH" = 1 ]; then
    (cd "$ROOT" && cargo bench --locked --bench hashing --no-run) 2>&1 | tail -n 2 | tee -a "$OUT/bench.log" >&2
  fi
  log "building: cargo build --release --locked (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release --locked) 2>&1 | tail -n 2 | tee -a "$OUT/bench.log" >&2
  (cd "$ROOT" && cargo build --release --locked --example bare_ok) 2>&1 | tail -n 1 | tee -a "$OUT/bench.log" >&2
fi
[ -x "$BIN" ] || die "no binary at $BIN"
[ -x "$BARE_BIN" ] || die "no ceiling binary at $BARE_BIN (cargo build --release --example bare_ok)"
command -v wrk >/dev/null || die "wrk missing: apt-get install wrk"
if [ -n "$LOGIN_LOADS" ] || [ "$OPEN_RATE" != 0 ]; then
  command -v oha >/dev/null || die "oha missing: cargo install oha --locked (or LOGIN_LOADS= OPEN_RATE=0)"
fi

# ---- environment / versions ----------------------------------------------------------------
{
  echo "run_id: $RUN_ID"
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD) ($(git -C "$ROOT" rev-parse --abbrev-ref HEAD))$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ', src modified')"
  echo "kernel: $(uname -sr)  glibc: $(ldd --version | head -1 | awk '{print $NF}')"
  echo "cpu: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/,"",$2); print $2; exit}') x $NPROC"
  echo "mem_total: $(free -m | awk '/Mem:/ {print $2}') MiB"
  echo "rustc: $(rustc --version)"
  echo "servauth: $("$BIN" --version)"
  echo "postgres: $(psql "$PG_ADMIN_URL" -tAc 'show server_version')"
  echo "sqlite (bundled by sqlx, libsqlite3-sys): $(grep -A1 '^name = "libsqlite3-sys"' "$ROOT/Cargo.lock" | awk -F'"' '/version/ {print $2}')"
  echo "wrk: $(wrk -v 2>&1 | head -1)"
  echo "oha: $(oha --version 2>/dev/null || echo 'not used')"
  echo "python: $(python3 --version 2>&1)"
  echo "ulimit_n: soft $(ulimit -Sn) hard $(ulimit -Hn)"
  echo "duration: $DURATION  warmup: $WARMUP  settle: ${SETTLE}s  idle_quiet: ${IDLE_QUIET}s  seed_users: $SEED_USERS"
  echo "hash_conns: $HASH_CONNS  token_conns: $TOKEN_CONNS  refresh_conns: $REFRESH_CONNS"
  echo "open_loop: $OPEN_RATE req/s over $OPEN_CONNS connections  login_loads: $LOGIN_LOADS"
  echo "face_conns (Better Auth get-session, cookie and bearer): ${FACE_CONNS:-(none)}"
  echo "server_env: ${SERVER_ENV:-(none)}"
} > "$OUT/env.txt"
cat "$OUT/env.txt" >&2

# ---- resource accounting (as in the peer's bench.sh) ------------------------------------
cpu_ticks() {  # utime+stime (clock ticks) of the given pids, summed
  local t=0 p f
  for p in "$@"; do
    f="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
    f="${f##*) }"
    t=$(( t + $(echo "$f" | awk '{print $12 + $13}') ))
  done
  echo "$t"
}
# All PostgreSQL CPU: live postgres processes + exited backends (folded into the
# postmaster's cutime/cstime).
PG_DATA="$(psql "$PG_ADMIN_URL" -tAc 'show data_directory')"
pg_ticks() {
  local pm f live
  pm="$(head -1 "$PG_DATA/postmaster.pid")"
  live="$(cpu_ticks $(ps -C postgres -o pid= | tr -d ' '))"
  f="$(cat "/proc/$pm/stat")"; f="${f##*) }"
  echo $(( live + $(echo "$f" | awk '{print $14 + $15}') ))
}
sys_ticks() { awk '/^cpu / {t=0; for (i=2;i<=NF;i++) t+=$i; print t-$5-$6, $9, t}' /proc/stat; }
rss_kib() { ps -o rss= -p "$1" 2>/dev/null | tr -d ' '; }
conns_open() { ss -Htn state established "( sport = :$PORT )" 2>/dev/null | wc -l; }

snapshot_idle() {  # label
  local rss; rss="$(rss_kib "$SERVER_PID")"
  log "idle RSS ($1): $rss KiB"
  printf '{"label":"%s","idle_rss_kib":%s}\n' "$1" "$rss" >> "$OUT/resources.jsonl"
}

scrape_metrics() { curl -fs "$URL/metrics" > "$1" || true; }

# Waits until the server is idle (< 10 % of a core over 0.5 s; at most 30 s). When wrk stops
# a closed-loop run, the requests its connections had in flight are still being answered
# (10,000 of them after a c=10000 run), and the next run must not start in that backlog.
wait_idle() {
  local a b i
  for i in $(seq 1 60); do
    a="$(cpu_ticks "$SERVER_PID")"; sleep 0.5; b="$(cpu_ticks "$SERVER_PID")"
    if [ $(( (b - a) * 200 / HZ )) -lt 10 ]; then
      [ "$i" -gt 1 ] && log "server idle after $(( i / 2 )) s"
      return 0
    fi
  done
  log "server still busy after 30 s"
}

# The Argon2 limit now (criterion `argon2_raw/all_cores`, about 10 s), with the server idle
# before and after; prints hashes/s. $1 backend, $2 tag (names its files).
measure_limit() {
  local dir="$OUT/$1/argon2-$2"
  mkdir -p "$dir"
  wait_idle
  (cd "$ROOT" && cargo bench --locked --bench hashing -- --noplot argon2_raw) > "$dir/criterion.txt" 2>&1 || true
  python3 "$BENCH_DIR/report.py" criterion "$CARGO_TARGET_DIR/criterion" > "$dir/criterion.json"
  criterion_field "$dir/criterion.json" argon2_limit_hps
  wait_idle
}

# One figure (hashes/s, one decimal) of a `report.py criterion` JSON file: $1 file, $2 key.
criterion_field() {
  python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))[sys.argv[2]], 1))' "$1" "$2"
}

# measure LABEL CMD... : runs one bounded load-generator command with the resource samplers
# around it; the command's output goes to $OUT/<label>.out.
measure() {
  local label="$1"; shift
  local file="${label//\//_}"
  local s0 p0 m0 t0 t1 s1 p1 m1 sampler
  ( while kill -0 "$SERVER_PID" 2>/dev/null; do echo "$(rss_kib "$SERVER_PID") $(conns_open)"; sleep 1; done ) > "$OUT/$file.rss" &
  sampler=$!
  s0="$(cpu_ticks "$SERVER_PID")"; p0="$(pg_ticks)"; m0="$(sys_ticks)"; t0="$(date +%s.%N)"
  env BENCH_LABEL="$label" /usr/bin/time -f '%U %S' -o "$OUT/$file.time" "$@" > "$OUT/$file.out" 2> "$OUT/$file.err" || true
  t1="$(date +%s.%N)"; s1="$(cpu_ticks "$SERVER_PID")"; p1="$(pg_ticks)"; m1="$(sys_ticks)"
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  python3 - "$label" "$OUT/$file" "$s0" "$s1" "$p0" "$p1" "$m0 $m1" "$t0" "$t1" "$HZ" "$NPROC" >> "$OUT/resources.jsonl" <<'PY'
import json, sys
label, base, s0, s1, p0, p1, m, t0, t1, hz, nproc = sys.argv[1:]
hz, nproc, wall = int(hz), int(nproc), float(t1) - float(t0)
m = [int(x) for x in m.split()]
d = m[5] - m[2]
samples = [l.split() for l in open(base + ".rss") if l.strip()]
rss = [int(x[0]) for x in samples if x and x[0].isdigit()]
conns = [int(x[1]) for x in samples if len(x) > 1]
try:
    u, s = open(base + ".time").read().split()[-2:]
    gen = (float(u) + float(s)) / wall * 100
except Exception:
    gen = 0.0
print(json.dumps({
    "label": label,
    "rss_start_kib": rss[0] if rss else 0,
    "rss_max_kib": max(rss, default=0),
    "rss_avg_kib": int(sum(rss) / len(rss)) if rss else 0,
    "conns_max": max(conns, default=0),
    "server_cpu_pct": round((int(s1) - int(s0)) / hz / wall * 100, 1),
    "postgres_cpu_pct": round((int(p1) - int(p0)) / hz / wall * 100, 1),
    "loadgen_cpu_pct": round(gen, 1),
    "machine_busy_pct": round((m[3] - m[0]) / d * 100 * nproc, 1) if d else 0,
    "machine_steal_pct": round((m[4] - m[1]) / d * 100 * nproc, 1) if d else 0,
    "wall_s": round(wall, 2),
}))
PY
  local r; r="$(tail -1 "$OUT/resources.jsonl")"
  grep -h '^SUMMARY' "$OUT/$file.out" | tee -a "$OUT/bench.log" >&2 || true
  log "$label: $r"
  wait_idle
  sleep "$SETTLE"
}

# wrk_run LABEL CONNS SCRIPT [ENV=VAL ...]
wrk_run() {
  local label="$1" conns="$2" script="$3"; shift 3
  local threads=2; [ "$conns" -lt 2 ] && threads=1
  measure "$label" env WRK_THREADS="$threads" "$@" \
    wrk -t"$threads" -c"$conns" -d"$DURATION" --timeout 30s --latency -s "$LUA_DIR/$script" "$URL"
}

warmup() {  # SCRIPT CONNS [ENV=VAL ...]  (not reported)
  local script="$1" conns="$2"; shift 2
  env BENCH_JSON=/dev/null BENCH_LABEL=warmup WRK_THREADS=2 "$@" \
    wrk -t2 -c"$conns" -d"$WARMUP" --timeout 30s -s "$LUA_DIR/$script" "$URL" | grep '^SUMMARY' >&2 || true
}

# oha_run LABEL CONNS RATE URL [oha args ...] : fixed offered rate (open loop, latency
# measured from each request's scheduled start; RATE 0: closed loop, each connection sending
# back to back), every request kept in a SQLite file so that latency can be split by status.
oha_run() {
  local label="$1" conns="$2" rate="$3" url="$4"; shift 4
  local file="${label//\//_}" pace=()
  [ "$rate" != 0 ] && pace=(-q "$rate" --latency-correction)
  rm -f "$OUT/$file.oha.db"
  measure "$label" oha --no-tui --output-format json -z "$DURATION" -c "$conns" "${pace[@]}" \
    --db-url "$OUT/$file.oha.db" "$@" "$url"
  python3 "$BENCH_DIR/report.py" oha-line "$OUT/$file.out" "$label" "$OUT/$file.oha.db" "$conns" "$rate" >> "$BENCH_JSON"
  tail -1 "$BENCH_JSON" | cut -c1-400 >&2
}

check_token_paths() {  # the seeded tokens still validate (validate answers 200 either way)
  local tok; tok="$(head -1 "$DATA/access.txt")"
  curl -fs "$URL/api/internal/validate" -H "x-service-auth: $INTERNAL_SECRET" \
    -H 'content-type: application/json' -d "{\"token\":\"$tok\"}" | grep -q '"active":true' \
    || die "validate no longer answers active:true for a seeded token"
  curl -fs -o /dev/null "$URL/auth/me" -H "authorization: Bearer $tok" || die "GET /auth/me refused a seeded token"
}

check_face_sessions() {  # the face's seeded sessions still resolve (get-session answers 200 `null` for none)
  local cookie bearer body
  cookie="$(head -1 "$DATA/face-cookies.txt")"; bearer="$(head -1 "$DATA/face-tokens.txt")"
  body="$(curl -fs "$URL/api/auth/get-session" -H "cookie: $cookie")" || true
  [[ "$body" == *'"session":{'* ]] || die "get-session no longer finds the session of a seeded cookie: ${body:0:200}"
  body="$(curl -fs "$URL/api/auth/get-session" -H "authorization: Bearer $bearer")" || true
  [[ "$body" == *'"session":{'* ]] || die "get-session no longer finds the session of a seeded bearer token: ${body:0:200}"
}

# ---- the Argon2 limit: criterion's hashing bench, all cores, configured parameters ----------
# argon2_raw/all_cores (one plain thread per core hashing back to back) is the limit; the
# pool's own figure (hashing_pool/verify_concurrent) is recorded beside it.
ARGON2_LIMIT="${ARGON2_LIMIT:-}"
if [ "$ARGON2_BENCH" = 1 ]; then
  log "Argon2 limit: cargo bench --bench hashing (default parameters, $NPROC workers)"
  rm -rf "$CARGO_TARGET_DIR"/criterion/{hashing_pool,argon2_raw,argon2_memory}
  (cd "$ROOT" && cargo bench --locked --bench hashing -- --noplot) > "$OUT/criterion-hashing.txt" 2>&1 \
    || { cat "$OUT/criterion-hashing.txt" >&2; die "hashing bench failed"; }
  python3 "$BENCH_DIR/report.py" criterion "$CARGO_TARGET_DIR/criterion" > "$OUT/criterion.json"
  ARGON2_LIMIT="$(criterion_field "$OUT/criterion.json" argon2_limit_hps)"
  POOL_LIMIT="$(criterion_field "$OUT/criterion.json" pool_limit_hps)"
  echo "pool_limit_hps: $POOL_LIMIT" >> "$OUT/env.txt"
fi
[ -n "$ARGON2_LIMIT" ] || die "no Argon2 limit: set ARGON2_BENCH=1 or ARGON2_LIMIT=<hashes/s>"
log "Argon2 limit: $ARGON2_LIMIT hashes/s"
echo "argon2_limit_hps: $ARGON2_LIMIT" >> "$OUT/env.txt"

# ---- one backend ---------------------------------------------------------------------------
run_backend() {  # postgres | sqlite
  local backend="$1" db_url
  DATA="$OUT/$backend/data"
  mkdir -p "$DATA"
  case "$backend" in
    postgres)
      psql "$PG_ADMIN_URL" -qtAc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)"
      psql "$PG_ADMIN_URL" -qtAc "CREATE DATABASE $PG_DB"
      db_url="postgres://postgres@127.0.0.1:5432/$PG_DB" ;;
    sqlite)
      db_url="sqlite://$OUT/$backend/servauth.db" ;;
    *) die "unknown backend $backend" ;;
  esac
  log "== $backend: fresh database $db_url"
  env DATABASE_URL="$db_url" \
    SERVAUTH_LISTEN="127.0.0.1:$PORT" \
    SERVAUTH_PUBLIC_URL="$URL" \
    SERVAUTH_INTERNAL_SECRET="$INTERNAL_SECRET" \
    SERVAUTH_BETTER_AUTH_SECRET="$BETTER_AUTH_SECRET" \
    SERVAUTH_COOKIE_SECURE=false \
    SERVAUTH_LOG="${SERVAUTH_LOG:-info}" \
    SERVAUTH_ACCESS_TTL=1h \
    SERVAUTH_RATE_LIMIT=1000000/1s \
    SERVAUTH_REFRESH_RATE_LIMIT=1000000/1s \
    SERVAUTH_LOGIN_FAILURE_LIMIT=1000000/1s \
    $SERVER_ENV \
    "$BIN" serve > "$OUT/$backend/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 150); do
    curl -fs -o /dev/null "$URL/ready" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$OUT/$backend/server.log" >&2; die "servauth exited"; }
    sleep 0.2
  done
  curl -fs -o /dev/null "$URL/ready" || die "servauth not ready in 30 s"
  if [ -n "$FACE_CONNS" ]; then
    [[ "$(curl -fs "$URL/api/auth/ok" || true)" == *'"ok":true'* ]] \
      || die "the Better Auth face does not answer GET /api/auth/ok (binary without it? FACE_CONNS= skips its rows)"
  fi
  sleep 2
  snapshot_idle "$backend/fresh"

  log "$backend: seeding $SEED_USERS users (register, 4 at a time)"
  python3 "$BENCH_DIR/seed.py" "$URL" "$DATA" "$SEED_USERS" 4 | tee -a "$OUT/bench.log" >&2
  check_token_paths
  local tok; tok="$(head -1 "$DATA/access.txt")"
  local email; email="$(head -1 "$DATA/emails.txt")"
  # Better Auth face: one session per seeded account, opened through sign-in/email as the
  # peer's seed.mjs opens its get-session pool.
  if [ -n "$FACE_CONNS" ]; then
    log "$backend: signing the $SEED_USERS users in through POST /api/auth/sign-in/email (4 at a time)"
    python3 "$BENCH_DIR/face_seed.py" "$URL" "$DATA" 4 | tee -a "$OUT/bench.log" >&2
    check_face_sessions
  fi

  log "$backend: warm-up ($WARMUP each, not reported)"
  warmup login.lua 16 DATA_DIR="$DATA"
  warmup validate.lua 64 DATA_DIR="$DATA"
  warmup me.lua 64 DATA_DIR="$DATA"
  if [ -n "$FACE_CONNS" ]; then
    warmup getsession.lua 64 DATA_DIR="$DATA" AUTH_MODE=cookie
    warmup getsession.lua 64 DATA_DIR="$DATA" AUTH_MODE=bearer
  fi
  # Idle means no request for IDLE_QUIET seconds: the hashing pool keeps its Argon2 work
  # areas (19 MiB per worker) for 10 s after its last hash, so that bursts of logins don't
  # fault them in again; the allocator returns freed memory within about a second.
  sleep "$IDLE_QUIET"
  snapshot_idle "$backend/after-warmup"

  # The Argon2 limit again, just before this backend's hashing runs, once more right after
  # its closed-loop logins, and before each open-loop login run: the host's memory bandwidth,
  # which Argon2 needs, moves over a run (93-108 hashes/s within one run here), so each
  # target is judged against measurements taken beside it. Closed-loop login is compared
  # with the mean of the two that bracket it; each open-loop rate is set from the one just
  # before it.
  local limit="$ARGON2_LIMIT" limit_after
  if [ "$ARGON2_BENCH" = 1 ]; then
    limit="$(measure_limit "$backend" before)"
    log "$backend: Argon2 limit just before its hashing runs: $limit hashes/s"
    echo "argon2_limit_hps[$backend]: $limit" >> "$OUT/env.txt"
  fi

  # Login and register, closed loop. Each run's new sessions feed the refresh pool.
  local c
  for c in $HASH_CONNS; do
    scrape_metrics "$OUT/${backend}_login-c$c.metrics0"
    wrk_run "$backend/login-c$c" "$c" login.lua DATA_DIR="$DATA" HARVEST_OUT="$DATA/harvest-login-c$c.txt"
    scrape_metrics "$OUT/${backend}_login-c$c.metrics1"
  done
  if [ "$ARGON2_BENCH" = 1 ]; then
    limit_after="$(measure_limit "$backend" after-login)"
    log "$backend: Argon2 limit just after its closed-loop logins: $limit_after hashes/s"
    echo "argon2_limit_hps[$backend/after-login]: $limit_after" >> "$OUT/env.txt"
  fi
  for c in $HASH_CONNS; do
    scrape_metrics "$OUT/${backend}_register-c$c.metrics0"
    wrk_run "$backend/register-c$c" "$c" register.lua DATA_DIR="$DATA" RUN_ID="$RUN_ID-c$c" HARVEST_OUT="$DATA/harvest-register-c$c.txt"
    scrape_metrics "$OUT/${backend}_register-c$c.metrics1"
  done
  # Login at fixed offered rates (open loop): below the Argon2 limit the p95 target applies,
  # beyond it the excess must be refused with a fast 503.
  local f rate
  for f in $LOGIN_LOADS; do
    if [ "$ARGON2_BENCH" = 1 ]; then
      limit="$(measure_limit "$backend" "open-x$f")"
      echo "argon2_limit_hps[$backend/open-x$f]: $limit" >> "$OUT/env.txt"
    fi
    rate="$(python3 -c "print(max(1, round($limit * $f)))")"
    log "$backend: login open loop at $f x $limit hashes/s = $rate/s"
    oha_run "$backend/login-open-x$f" 128 "$rate" "$URL/auth/login" -m POST -T application/json \
      -d "{\"email\":\"$email\",\"password\":\"$PASSWORD\",\"client\":\"native\"}"
  done

  # Login overloaded: 64 connections sending back to back, ignoring Retry-After (oha, closed
  # loop, so that latency is split by status): the refusals must stay cheap enough that the
  # 2xx goodput holds near the c16 figure.
  oha_run "$backend/login-overload-c64" 64 0 "$URL/auth/login" -m POST -T application/json \
    -d "{\"email\":\"$email\",\"password\":\"$PASSWORD\",\"client\":\"native\"}"

  # The ceiling: the bare handler, alone on the machine for its run (servauth idle beside it).
  local server_pid="$SERVER_PID"
  BARE_LISTEN="127.0.0.1:$BARE_PORT" "$BARE_BIN" > "$OUT/$backend/bare.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 50); do curl -fs -o /dev/null "http://127.0.0.1:$BARE_PORT/" && break; sleep 0.1; done
  URL_SAVED="$URL"; URL="http://127.0.0.1:$BARE_PORT"
  wrk_run "$backend/bare-ok-c64" 64 ok.lua
  URL="$URL_SAVED"
  kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID="$server_pid"

  # Token paths: closed loop at several concurrencies, then the fixed-rate open loop over
  # OPEN_CONNS connections.
  check_token_paths
  for c in $TOKEN_CONNS; do
    wrk_run "$backend/validate-c$c" "$c" validate.lua DATA_DIR="$DATA"
  done
  # Forward-auth, as a gateway calls it (issue 19: within 10 % of validate at c64).
  wrk_run "$backend/authorize-c64" 64 authorize.lua DATA_DIR="$DATA"
  if [ "$OPEN_RATE" != 0 ]; then
    oha_run "$backend/validate-open$OPEN_RATE-c$OPEN_CONNS" "$OPEN_CONNS" "$OPEN_RATE" "$URL/api/internal/validate" \
      -m POST -T application/json -H "X-Service-Auth: $INTERNAL_SECRET" -d "{\"token\":\"$tok\"}"
  fi
  for c in $TOKEN_CONNS; do
    wrk_run "$backend/me-c$c" "$c" me.lua DATA_DIR="$DATA"
  done
  if [ "$OPEN_RATE" != 0 ]; then
    oha_run "$backend/me-open$OPEN_RATE-c$OPEN_CONNS" "$OPEN_CONNS" "$OPEN_RATE" "$URL/auth/me" \
      -H "Authorization: Bearer $tok"
    # Memory gives back what the 10k connections took: RSS 30 s after the run.
    sleep 30
    snapshot_idle "$backend/30s-after-open-loop"
  fi
  check_token_paths

  # Better Auth face: GET /api/auth/get-session, closed loop, with the peer's client work
  # (its lua/getsession.lua: the signed session cookie, then Authorization: Bearer with the
  # set-auth-token of sign-in; the peer needs a restart with its bearer plugin for those,
  # servauth's face always takes both).
  if [ -n "$FACE_CONNS" ]; then
    check_face_sessions
    local mode
    for mode in cookie bearer; do
      for c in $FACE_CONNS; do
        wrk_run "$backend/face-getsession-$mode-c$c" "$c" getsession.lua DATA_DIR="$DATA" AUTH_MODE="$mode"
      done
    done
    check_face_sessions
  fi

  # Refresh: every token is used once; the pool is the seed's tokens plus those of every
  # session the login/register runs opened, and each run hands its survivors to the next.
  cat "$DATA/refresh.txt" "$DATA"/harvest-*.txt > "$DATA/refresh-pool.txt" 2>/dev/null || true
  for c in $REFRESH_CONNS; do
    local have need
    have="$(wc -l < "$DATA/refresh-pool.txt")"
    need=$(( c * 3 / 2 + 64 ))
    if [ "$have" -lt "$need" ]; then
      log "$backend: refresh pool $have < $need for c=$c: registering $(( need - have )) more sessions"
      python3 "$BENCH_DIR/seed.py" "$URL" "$DATA" $(( need - have )) 4 "top$c" | tee -a "$OUT/bench.log" >&2
      cat "$DATA/top$c-refresh.txt" >> "$DATA/refresh-pool.txt"
    fi
    wrk_run "$backend/refresh-c$c" "$c" refresh.lua REFRESH_IN="$DATA/refresh-pool.txt" REFRESH_OUT="$DATA/refresh-pool.next"
    mv "$DATA/refresh-pool.next" "$DATA/refresh-pool.txt"
  done

  sleep "$IDLE_QUIET"
  snapshot_idle "$backend/end"
  scrape_metrics "$OUT/${backend}_end.metrics"
  if [ "$backend" = postgres ]; then
    psql "postgres://postgres@127.0.0.1:5432/$PG_DB" -tAc \
      "select 'rows: users=' || (select count(*) from users) || ' sessions=' || (select count(*) from sessions) || ' refresh_tokens=' || (select count(*) from refresh_tokens)" | tee -a "$OUT/bench.log" >&2
  fi
  log "$backend: $(grep -c '"level":"ERROR"' "$OUT/$backend/server.log" || true) ERROR lines in server.log"
  stop_server
}

for backend in $BACKENDS; do run_backend "$backend"; done

# ---- the peer, same machine, same PostgreSQL, same run ---------------------------------------
if [ "$PEER" = 1 ]; then
  PEER_DIR="$BENCH_DIR/results/.peer"   # writable copy; node_modules kept between runs
  log "== peer: Better Auth from $PEER_SRC (copied to $PEER_DIR; its own run.sh/bench.sh)"
  mkdir -p "$PEER_DIR"
  rsync -a --delete --exclude node_modules --exclude results --exclude data --exclude logs \
    --exclude '*.pid' "$PEER_SRC/" "$PEER_DIR/"
  chmod -R u+w "$PEER_DIR"
  before="$(ls "$PEER_DIR/results" 2>/dev/null || true)"
  (cd "$PEER_DIR" && DURATION="$DURATION" WARMUP="$WARMUP" SETTLE="$SETTLE" EXTRA="$PEER_EXTRA" ./bench.sh) \
    > "$OUT/peer-bench.out" 2>&1 || { tail -30 "$OUT/peer-bench.out" >&2; die "peer bench.sh failed"; }
  peer_run="$(comm -13 <(echo "$before" | sort) <(ls "$PEER_DIR/results" | sort) | tail -1)"
  [ -n "$peer_run" ] || die "peer bench.sh wrote no results"
  cp -r "$PEER_DIR/results/$peer_run" "$OUT/peer"
  log "peer: results/$peer_run copied to $OUT/peer"
fi

{
  python3 "$BENCH_DIR/report.py" summary "$OUT"
  python3 "$BENCH_DIR/face_report.py" "$OUT"
} | tee "$OUT/summary.md"
log "done: $OUT"
