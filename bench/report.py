#!/usr/bin/env python3
"""Turns a bench/run.sh run directory into figures (stdlib only).

    report.py criterion TARGET/criterion          -> JSON: criterion means + the Argon2 limit
    report.py oha-line OUT.json LABEL DB CONNS RATE -> one results.jsonl line for an oha run
    report.py summary results/<RUN_ID>            -> the markdown summary (tables, ratios, targets)
"""
import json
import math
import re
import sqlite3
import sys
from pathlib import Path

# --------------------------------------------------------------------------------------------
# criterion


def criterion(root: Path) -> None:
    out = {}
    for est in sorted(root.glob("**/new/estimates.json")):
        bench = est.parent.parent.relative_to(root).as_posix()
        if not (bench.split("/")[0] in ("hashing_pool", "argon2_raw", "argon2_memory", "access_token")):
            continue
        mean_ns = json.loads(est.read_text())["mean"]["point_estimate"]
        info = json.loads((est.parent / "benchmark.json").read_text())
        elements = (info.get("throughput") or {}).get("Elements", 1)
        out[bench] = {"mean_ms": mean_ns / 1e6, "elements": elements,
                      "per_s": elements / (mean_ns / 1e9)}
    result = {"benches": out}
    for key, prefix in (("argon2_limit_hps", "argon2_raw/all_cores"),
                        ("pool_limit_hps", "hashing_pool/verify_concurrent")):
        found = [v["per_s"] for k, v in out.items() if k.startswith(prefix)]
        if found:
            result[key] = found[0]
    print(json.dumps(result, indent=1))


# --------------------------------------------------------------------------------------------
# oha


# SQLite's refresh c64 before issue 18 (bench/RESULTS.md, the last full run before it):
# issue 18 asks for twice that.
SQLITE_REFRESH_BEFORE = 556


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def oha_line(out_json: Path, label: str, db: Path, conns: str, rate: str) -> None:
    text = out_json.read_text()
    # oha's "Storing results to …" line (stderr) may come before or after the JSON.
    summary, _ = json.JSONDecoder().raw_decode(text[text.index("{"):])
    errors = {k: v for k, v in summary.get("errorDistribution", {}).items()
              if "deadline" not in k.lower()}
    con = sqlite3.connect(db)
    rows = con.execute("SELECT status, duration, start, end FROM oha").fetchall()
    con.close()
    wall = summary["summary"]["total"]
    durations = sorted(r[1] * 1000 for r in rows)
    by_status = {}
    for status, duration, _, _ in rows:
        by_status.setdefault(status, []).append(duration * 1000)
    line = {
        "label": label, "tool": "oha", "open_loop": float(rate) > 0,
        "offered_rps": float(rate), "conns": int(conns),
        "requests": len(rows), "duration_s": wall, "rps": len(rows) / wall,
        "ok_rps": sum(1 for r in rows if 200 <= r[0] < 300) / wall,
        "lat_mean_ms": sum(durations) / len(durations) if durations else 0,
        "lat_p50_ms": percentile(durations, 50), "lat_p95_ms": percentile(durations, 95),
        "lat_p99_ms": percentile(durations, 99), "lat_max_ms": durations[-1] if durations else None,
        "errors": sum(errors.values()), "error_kinds": errors,
        "non_2xx_3xx": sum(1 for r in rows if not 200 <= r[0] < 400),
        "status": {},
    }
    for status, values in sorted(by_status.items()):
        values.sort()
        line["status"][str(status)] = {
            "count": len(values), "p50_ms": percentile(values, 50),
            "p95_ms": percentile(values, 95), "p99_ms": percentile(values, 99),
            "max_ms": values[-1]}
    print(json.dumps(line))


# --------------------------------------------------------------------------------------------
# summary


def jsonl(path: Path):
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def f1(x):
    if x is None:
        return ""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"


def ms(x):
    if x is None:
        return ""
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def mib(kib):
    return f"{kib / 1024:.0f}" if kib else ""


def ratio(a, b):
    return f"{a / b:.1f}×" if a and b else "n/a"


def other_pct(x, gen_key="loadgen_cpu_pct"):
    if "machine_busy_pct" not in x:
        return None
    return max(0.0, x["machine_busy_pct"] - x["server_cpu_pct"] - x["postgres_cpu_pct"]
               - float(x.get(gen_key, 0) or 0))


def metric_values(path: Path):
    """Prometheus text -> {name{labels}: value} for the hash metrics."""
    values = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        if line.startswith("servauth_password_hash") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def ok_rps(r):
    if "ok_rps" in r:
        return r["ok_rps"]
    return (r["requests"] - r["non_2xx_3xx"]) / r["duration_s"]


def conns_of(label):
    m = re.search(r"-c(\d+)$", label)
    return int(m.group(1)) if m else None


def summary(run: Path) -> None:
    env = (run / "env.txt").read_text() if (run / "env.txt").exists() else ""
    runs = {r["label"]: r for r in jsonl(run / "results.jsonl")}
    resources = jsonl(run / "resources.jsonl")
    res = {r["label"]: r for r in resources if "server_cpu_pct" in r}
    idle = {r["label"]: r["idle_rss_kib"] for r in resources if "idle_rss_kib" in r}
    crit = json.loads((run / "criterion.json").read_text()) if (run / "criterion.json").exists() else {}
    m = re.search(r"argon2_limit_hps: ([\d.]+)", env)
    limit = float(m.group(1)) if m else None
    peer_runs = {r["label"]: r for r in jsonl(run / "peer" / "results.jsonl")}
    peer_res_all = jsonl(run / "peer" / "resources.jsonl")
    peer_res = {r["label"]: r for r in peer_res_all if "server_cpu_pct" in r}
    peer_idle = {r["label"]: r["idle_rss_kib"] for r in peer_res_all if "idle_rss_kib" in r}
    backends = [b for b in ("postgres", "sqlite") if any(k.startswith(b + "/") for k in runs)]

    out = [f"# servauth benchmark run {run.name}", "", "```", env.strip(), "```", ""]

    # ---- Argon2 limit and micro-benchmarks
    if crit.get("benches"):
        out += ["## Micro-benchmarks (criterion) and the Argon2 limit", "",
                "| bench | mean per iteration | per second |", "|---|---:|---:|"]
        for name, v in crit["benches"].items():
            out.append(f"| {name} | {v['mean_ms']:.3f} ms ({v['elements']} op) | {v['per_s']:.1f} |")
        out.append("")
    m = re.search(r"pool_limit_hps: ([\d.]+)", env)
    pool_limit = float(m.group(1)) if m else None
    if limit:
        out += [f"**Argon2 limit** (criterion `argon2_raw/all_cores`: one thread per core hashing "
                f"back to back, configured parameters): **{limit:.1f} hashes/s**"
                + (f"; through the server's hashing pool (`hashing_pool/verify_concurrent`): "
                   f"{pool_limit:.1f} hashes/s." if pool_limit else "."), ""]

    header = ("| run | conns | offered req/s | 2xx req/s | all req/s | p50 ms | p95 ms | p99 ms | max ms | "
              "requests | errors | non-2xx | RSS max MiB | open conns max | server CPU % | postgres CPU % | "
              "loadgen CPU % | busy % | other % |")
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"

    def row(label, r, x, name=None, gen_key="loadgen_cpu_pct"):
        if r.get("tool") == "oha":
            errs = str(r["errors"]) + (f" {r['error_kinds']}" if r["errors"] else "")
            conns, offered = r["conns"], (f1(r["offered_rps"]) if r["offered_rps"] else "closed")
        else:
            errs = f"{r['err_connect']}/{r['err_read']}/{r['err_write']}/{r['err_timeout']}"
            conns, offered = conns_of(label) or "", "closed"
        o = other_pct(x, gen_key) if x else None
        return (f"| {name or label} | {conns} | {offered} | {f1(ok_rps(r))} | {f1(r['rps'])} | "
                f"{ms(r['lat_p50_ms'])} | {ms(r['lat_p95_ms'])} | {ms(r['lat_p99_ms'])} | "
                f"{ms(r['lat_max_ms'])} | {r['requests']} | {errs} | {r['non_2xx_3xx']} | "
                f"{mib(x.get('rss_max_kib', 0))} | {x.get('conns_max', '')} | "
                f"{f1(x.get('server_cpu_pct'))} | {f1(x.get('postgres_cpu_pct'))} | "
                f"{f1(float(x.get(gen_key, 0) or 0)) if x else ''} | {f1(x.get('machine_busy_pct'))} | "
                f"{f1(o) if o is not None else ''} |")

    def measured(key):
        m = re.search(rf"argon2_limit_hps\[{re.escape(key)}\]: ([\d.]+)", env)
        return float(m.group(1)) if m else None

    def limit_of(b):
        """The limit beside this backend's closed-loop logins: the mean of the measurements
        just before and just after them (or what there is)."""
        around = [x for x in (measured(b), measured(f"{b}/after-login")) if x]
        return sum(around) / len(around) if around else limit

    def open_limit(b, frac):
        """The limit measured just before an open-loop login run, which set its rate."""
        return measured(f"{b}/open-x{frac:g}") or limit_of(b)

    for b in backends:
        out += [f"## servauth on {b}", ""]
        before, after = measured(b), measured(f"{b}/after-login")
        if before and after:
            opens = [f"{x:g}: {measured(f'{b}/open-x{x:g}'):.1f}" for x in
                     sorted(float(l.rsplit('-x', 1)[1]) for l in runs if l.startswith(f"{b}/login-open-x"))
                     if measured(f"{b}/open-x{x:g}")]
            out += [f"Argon2 limit measured again just before this backend's logins: **{before:.1f}**, just after "
                    f"its closed-loop logins: **{after:.1f} hashes/s**; their mean, **{limit_of(b):.1f}**, is what "
                    f"closed-loop login is compared with. Before each open-loop login run (its rate is that "
                    f"fraction of it): {'; '.join(opens) or 'not measured'}.", ""]
        elif limit_of(b) != limit:
            out += [f"Argon2 limit measured again just before these runs: **{limit_of(b):.1f} hashes/s** "
                    f"(the targets of this backend use it).", ""]
        out += [header, sep]
        for label, r in runs.items():
            if label.startswith(b + "/"):
                out.append(row(label, r, res.get(label, {}), label.split("/", 1)[1]))
        out += ["", "| idle snapshot | RSS MiB |", "|---|---:|"]
        for label, kib in idle.items():
            if label.startswith(b + "/"):
                out.append(f"| {label} | {kib / 1024:.1f} |")
        out.append("")
        # per-status latency of the open-loop rows
        opens = [(l, r) for l, r in runs.items() if l.startswith(b + "/") and r.get("tool") == "oha"]
        if opens:
            out += ["| open-loop run | status | count | p50 ms | p95 ms | p99 ms | max ms |",
                    "|---|---:|---:|---:|---:|---:|---:|"]
            for l, r in opens:
                for status, s in r["status"].items():
                    out.append(f"| {l.split('/', 1)[1]} | {status} | {s['count']} | {ms(s['p50_ms'])} | "
                               f"{ms(s['p95_ms'])} | {ms(s['p99_ms'])} | {ms(s['max_ms'])} |")
            out.append("")
        # hashing as seen by the server
        hrows = []
        for l in runs:
            if l.startswith(b + "/") and ("login-c" in l or "register-c" in l):
                file = l.replace("/", "_")
                m0, m1 = metric_values(run / f"{file}.metrics0"), metric_values(run / f"{file}.metrics1")
                cnt = m1.get("servauth_password_hash_duration_seconds_count", 0) - m0.get("servauth_password_hash_duration_seconds_count", 0)
                tot = m1.get("servauth_password_hash_duration_seconds_sum", 0) - m0.get("servauth_password_hash_duration_seconds_sum", 0)
                wcnt = m1.get("servauth_password_hash_wait_seconds_count", 0) - m0.get("servauth_password_hash_wait_seconds_count", 0)
                wtot = m1.get("servauth_password_hash_wait_seconds_sum", 0) - m0.get("servauth_password_hash_wait_seconds_sum", 0)
                rej = m1.get("servauth_password_hash_rejected_total", 0) - m0.get("servauth_password_hash_rejected_total", 0)
                wall = res.get(l, {}).get("wall_s") or runs[l]["duration_s"]
                if cnt:
                    hrows.append(f"| {l.split('/', 1)[1]} | {cnt:.0f} | {cnt / wall:.1f} | "
                                 f"{f'{cnt / wall / limit_of(b) * 100:.0f} %' if limit else ''} | {tot / cnt * 1000:.1f} | "
                                 f"{wtot / wcnt * 1000 if wcnt else 0:.1f} | {rej:.0f} | "
                                 f"{f'{ok_rps(runs[l]) / limit_of(b) * 100:.0f} %' if limit else ''} |")
        if hrows:
            out += ["Password hashing inside the server during the closed-loop runs (from `GET /metrics`; "
                    "hashes/s over the run's wall time):", "",
                    "| run | hashes | hashes/s | of the Argon2 limit | mean hash ms | mean queue wait ms | refused (503) | 2xx req/s ÷ limit |",
                    "|---|---:|---:|---:|---:|---:|---:|---:|"] + hrows + [""]

    # ---- peer
    if peer_runs:
        out += ["## Better Auth peer (its own bench.sh, same run)", "", header, sep]
        for label, r in peer_runs.items():
            out.append(row(label, r, peer_res.get(label, {}), gen_key="wrk_cpu_pct"))
        out += ["", "| peer idle snapshot | RSS MiB |", "|---|---:|"]
        for label, kib in peer_idle.items():
            out.append(f"| {label} | {kib / 1024:.1f} |")
        out.append("")

    # ---- ratios
    def peer_rps(label):
        r = peer_runs.get(label)
        return ok_rps(r) if r else None

    targets = []
    if peer_runs:
        out += ["## Ratios servauth ÷ peer (2xx req/s at the same connection count)", "",
                "| servauth run | peer run | " + " | ".join(backends) + " |",
                "|---|---|" + "---:|" * len(backends)]
        pairs = []
        for c in (1, 64, 256, 1000):
            for ours in ("validate", "me"):
                for theirs in ("getsession-cookie", "getsession-bearer"):
                    pairs.append((f"{ours}-c{c}", f"{theirs}-c{c}"))
        for c in (1, 16, 64):
            pairs.append((f"login-c{c}", f"signin-c{c}"))
            pairs.append((f"register-c{c}", f"signup-c{c}"))
        for ours, theirs in pairs:
            p = peer_rps(theirs)
            cells = []
            for b in backends:
                r = runs.get(f"{b}/{ours}")
                cells.append(ratio(ok_rps(r), p) if r and p else "n/a")
            if any(c != "n/a" for c in cells):
                out.append(f"| {ours} | {theirs} | " + " | ".join(cells) + " |")
        ra = [(f"idle RSS, fresh ({b})", idle.get(f"{b}/fresh"), peer_idle.get("A-fresh")) for b in backends]
        ra += [(f"idle RSS, after load ({b})", idle.get(f"{b}/end"), peer_idle.get("A-end")) for b in backends]
        out += ["", "| memory | servauth MiB | peer MiB | servauth ÷ peer |", "|---|---:|---:|---:|"]
        for name, a, p in ra:
            if a and p:
                out.append(f"| {name} | {a / 1024:.1f} | {p / 1024:.1f} | {a / p:.2f} |")
        out.append("")

        # T1 (issue 18): token checks at c64 >= 40x the peer's get-session
        for b in backends:
            best_peer = max([x for x in (peer_rps("getsession-cookie-c64"), peer_rps("getsession-bearer-c64")) if x] or [0])
            for ours in ("validate", "me"):
                r = runs.get(f"{b}/{ours}-c64")
                if r and best_peer:
                    x = ok_rps(r) / best_peer
                    targets.append((f"{b}: {ours} c64 ≥ 40× peer get-session (best of cookie/bearer, {best_peer:.0f}/s)",
                                    f"{x:.1f}×", x >= 40))

    # The machine's ceiling (the bare axum handler, same backend's run) and the token paths
    for b in backends:
        bare = runs.get(f"{b}/bare-ok-c64")
        for ours in ("validate", "me"):
            r = runs.get(f"{b}/{ours}-c64")
            if r and bare:
                share = ok_rps(r) / ok_rps(bare)
                targets.append((f"{b}: {ours} c64 ≥ 30 % of the bare axum ceiling ({ok_rps(bare):.0f}/s)",
                                f"{share * 100:.0f} %", share >= 0.3))
            if r:
                targets.append((f"{b}: {ours} c64 p99 < 10 ms", f"{ms(r['lat_p99_ms'])} ms", r["lat_p99_ms"] < 10))
    # Forward-auth (issue 19): within 10 % of validate at c64, same backend, same run
    for b in backends:
        fa, va = runs.get(f"{b}/authorize-c64"), runs.get(f"{b}/validate-c64")
        if fa and va:
            share = ok_rps(fa) / ok_rps(va)
            targets.append((f"{b}: forward-auth c64 within 10 % of validate c64 ({ok_rps(va):.0f}/s)",
                            f"{ok_rps(fa):.0f}/s = {share * 100:.0f} %", share >= 0.9))
    # Refresh at c64: PostgreSQL >= 3k/s; SQLite >= 2x the figure before issue 18
    for b in backends:
        r = runs.get(f"{b}/refresh-c64")
        if r:
            goal = 3000 if b == "postgres" else 2 * SQLITE_REFRESH_BEFORE
            why = "≥ 3k req/s" if b == "postgres" else f"≥ 2× {SQLITE_REFRESH_BEFORE}/s (before issue 18)"
            targets.append((f"{b}: refresh c64 {why}", f"{ok_rps(r):.0f}/s", ok_rps(r) >= goal))
    # T2: login >= 90 % of the Argon2 limit (the backend's own measurement when there is one),
    # p95 < 250 ms; overloaded (c64, Retry-After ignored) the goodput holds
    if limit:
        for b in backends:
            lim = limit_of(b)
            r16 = runs.get(f"{b}/login-c16")
            if r16:
                pool_note = f"; {ok_rps(r16) / pool_limit * 100:.0f} % of the pool's {pool_limit:.1f}/s at the start" if pool_limit else ""
                targets.append((f"{b}: login c16 ≥ 90 % of the Argon2 limit ({lim:.1f}/s, mean of before and after), p95 < 250 ms",
                                f"{ok_rps(r16):.1f}/s = {ok_rps(r16) / lim * 100:.0f} %, p95 {ms(r16['lat_p95_ms'])} ms{pool_note}",
                                ok_rps(r16) >= 0.9 * lim and r16["lat_p95_ms"] < 250))
            over = runs.get(f"{b}/login-overload-c64")
            if r16 and over:
                s503 = over["status"].get("503", {})
                share = ok_rps(over) / ok_rps(r16)
                targets.append((f"{b}: login c64 ignoring Retry-After: 2xx ≥ 85 % of c16's, 503s p99 < 5 ms",
                                f"{ok_rps(over):.1f}/s = {share * 100:.0f} %; {s503.get('count', 0)} × 503, p99 {ms(s503.get('p99_ms'))} ms",
                                share >= 0.85 and (not s503 or s503["p99_ms"] < 5) and not over["errors"]))
    # T3: open-loop login
    for b in backends:
        for l, r in runs.items():
            if not l.startswith(f"{b}/login-open-x"):
                continue
            frac = float(l.rsplit("-x", 1)[1])
            s200 = r["status"].get("200", {})
            s503 = r["status"].get("503", {})
            lim = open_limit(b, frac)
            if frac <= 0.7:
                ok = (s200.get("p95_ms") or 1e9) < 200 and not s503 and not r["errors"]
                targets.append((f"{b}: login at {frac:.0%} of the limit ({r['offered_rps']:.0f}/s offered, limit {lim:.1f}/s just before): p95 < 200 ms, no 503",
                                f"p95 {ms(r['lat_p95_ms'])} ms, {s503.get('count', 0)} × 503", ok))
            else:
                ok = bool(s503) and s503["p99_ms"] < 5 and not r["errors"]
                targets.append((f"{b}: login at {frac:.0%} of the limit ({r['offered_rps']:.0f}/s offered, limit {lim:.1f}/s just before): the excess gets 503 in < 5 ms (p99)",
                                f"{s503.get('count', 0)} × 503, p50 {ms(s503.get('p50_ms'))} / p99 {ms(s503.get('p99_ms'))} / max {ms(s503.get('max_ms'))} ms; "
                                f"200s: {s200.get('count', 0)} ({s200.get('count', 0) / r['duration_s']:.1f}/s), p99 {ms(s200.get('p99_ms'))} ms", ok))
    # T4: 10k connections open loop
    for b in backends:
        for l, r in runs.items():
            if l.startswith(f"{b}/") and r.get("tool") == "oha" and "-open" in l and "login" not in l:
                x = res.get(l, {})
                ok = (r["lat_p99_ms"] < 20 and r["errors"] == 0 and r["non_2xx_3xx"] == 0
                      and x.get("rss_max_kib", 0) / 1024 < 200)
                targets.append((f"{b}: {l.split('/')[1]}: p99 < 20 ms, no errors, RSS < 200 MiB",
                                f"p99 {ms(r['lat_p99_ms'])} ms, {r['errors']} errors, {r['non_2xx_3xx']} non-2xx, "
                                f"{ok_rps(r):.0f}/s achieved, {x.get('conns_max', '?')} conns open, "
                                f"RSS max {x.get('rss_max_kib', 0) / 1024:.0f} MiB", ok))
    # T5: memory given back: idle RSS 30 s after the open-loop (10k-connection) run
    for b in backends:
        kib = idle.get(f"{b}/30s-after-open-loop")
        if kib:
            targets.append((f"{b}: idle RSS 30 s after the 10k-connection run < 40 MiB", f"{kib / 1024:.1f} MiB", kib / 1024 < 40))
    if targets:
        out += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
        for name, measured, ok in targets:
            out.append(f"| {name} | {measured} | {'met' if ok else '**missed**'} |")
        out.append("")
    out.append("CPU % is cores × 100 (the machine maximum is 100 × cores). other % = machine busy − server − "
               "postgres − load generator: CPU taken by unrelated processes (on SQLite runs it also holds any "
               "PostgreSQL work of others, which is shown in the postgres column). 2xx req/s counts only "
               "successful answers; all req/s includes 4xx/5xx (e.g. 503 overloaded).")
    print("\n".join(out))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "criterion":
        criterion(Path(sys.argv[2]))
    elif cmd == "oha-line":
        oha_line(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), sys.argv[5], sys.argv[6])
    elif cmd == "summary":
        summary(Path(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
