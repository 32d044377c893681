#!/usr/bin/env python3
"""The Better Auth face section of a bench/run.sh summary (stdlib only).

    face_report.py results/<RUN_ID>   -> markdown, appended to summary.md by run.sh

Sets servauth's `GET /api/auth/get-session` rows (<backend>/face-getsession-{cookie,bearer}-cN)
against the peer's rows of the same run with the same client work
(getsession-{cookie,bearer}-cN): 2xx req/s ratio and p99, and the face's goals on
PostgreSQL at c64: >= 20x the peer's req/s, p99 < 10 ms.
"""
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # importing report.py must not leave bench/__pycache__
from report import conns_of, f1, jsonl, ms, ok_rps, ratio

GOAL_RATIO = 20
GOAL_P99_MS = 10


def main(run: Path) -> None:
    runs = {r["label"]: r for r in jsonl(run / "results.jsonl")}
    peer = {r["label"]: r for r in jsonl(run / "peer" / "results.jsonl")}
    rows = [(l.split("/", 1)[0], l.split("/", 1)[1][len("face-getsession-"):].rsplit("-c", 1)[0], conns_of(l), l)
            for l in runs if "/face-getsession-" in l and conns_of(l)]
    if not rows:
        return
    out = ["## Better Auth face: get-session against the peer", "",
           "`GET /api/auth/get-session` on servauth's Better Auth face and on Better Auth itself, "
           "the same wrk script (sessions opened by `POST /api/auth/sign-in/email`, then the session "
           "cookie, or the `set-auth-token` as `Authorization: Bearer`, replayed), same connection count."
           + ("" if peer else " The peer was not run (PEER=0): no ratios."), "",
           "| servauth run | peer run | servauth 2xx req/s | peer 2xx req/s | servauth ÷ peer | "
           "servauth p99 ms | peer p99 ms | servauth errors / non-2xx |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for backend, mode, c, label in rows:
        r, p = runs[label], peer.get(f"getsession-{mode}-c{c}")
        errs = f"{r['err_connect']}/{r['err_read']}/{r['err_write']}/{r['err_timeout']} / {r['non_2xx_3xx']}"
        out.append(f"| {label} | {f'getsession-{mode}-c{c}' if p else 'n/a'} | {f1(ok_rps(r))} | "
                   f"{f1(ok_rps(p)) if p else ''} | {ratio(ok_rps(r), ok_rps(p)) if p else 'n/a'} | "
                   f"{ms(r['lat_p99_ms'])} | {ms(p['lat_p99_ms']) if p else ''} | {errs} |")
    out.append("")
    targets = []
    for mode in ("cookie", "bearer"):
        r = runs.get(f"postgres/face-getsession-{mode}-c64")
        if not r:
            continue
        p = peer.get(f"getsession-{mode}-c64")
        clean = not (r["err_connect"] or r["err_read"] or r["err_write"] or r["err_timeout"] or r["non_2xx_3xx"])
        dirty = "" if clean else f"; socket errors or non-2xx ({r['non_2xx_3xx']} non-2xx)"
        if p:
            x = ok_rps(r) / ok_rps(p) if ok_rps(p) else 0
            targets.append((f"postgres: face get-session ({mode}) c64 ≥ {GOAL_RATIO}× the peer's get-session "
                            f"({mode}) c64 ({ok_rps(p):.0f}/s)",
                            f"{x:.1f}× ({ok_rps(r):.0f}/s){dirty}", x >= GOAL_RATIO and clean))
        targets.append((f"postgres: face get-session ({mode}) c64 p99 < {GOAL_P99_MS} ms",
                        (f"{ms(r['lat_p99_ms'])} ms (peer: {ms(p['lat_p99_ms'])} ms)" if p else f"{ms(r['lat_p99_ms'])} ms") + dirty,
                        r["lat_p99_ms"] < GOAL_P99_MS and clean))
    r, p = runs.get("postgres/face-getsession-cookie-c64"), peer.get("getsession-cookie-c64")
    if r:
        out += [f"**Face get-session c64 on PostgreSQL (cookie): {ok_rps(r):.0f} req/s, p99 {ms(r['lat_p99_ms'])} ms"
                + (f" against the peer's {ok_rps(p):.0f} req/s, p99 {ms(p['lat_p99_ms'])} ms: "
                   f"{ratio(ok_rps(r), ok_rps(p))}" if p else " (peer not run)")
                + f"** (goals: ≥ {GOAL_RATIO}×, p99 < {GOAL_P99_MS} ms).", ""]
    if targets:
        out += ["| face target | measured | |", "|---|---|---|"]
        for name, measured, ok in targets:
            out.append(f"| {name} | {measured} | {'met' if ok else '**missed**'} |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
