#!/usr/bin/env python3
"""Opens one Better Auth face session per seeded account (stdlib only, loopback only).

    face_seed.py BASE_URL DATA_DIR [CONCURRENCY=4]

Signs every account of DATA_DIR/emails.txt (written by seed.py) in through
`POST /api/auth/sign-in/email` with the password 'correct horse battery staple', as the
Better Auth peer's seed.mjs does, and writes to DATA_DIR:
  face-cookies.txt  the session cookie of each (`better-auth.session_token=<signed token>`,
                    the Cookie header value the get-session rows replay)
  face-tokens.txt   its `set-auth-token` header (`<token>.<signature>`, for
                    `Authorization: Bearer`)
Every sign-in must answer 200 with both; anything else stops the seed with the answer.
"""
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PASSWORD = "correct horse battery staple"
COOKIE = "better-auth.session_token="


def sign_in(base: str, email: str) -> tuple[str, str]:
    body = ('{"email":"%s","password":"%s"}' % (email, PASSWORD)).encode()
    request = urllib.request.Request(
        f"{base}/api/auth/sign-in/email", data=body, headers={"content-type": "application/json"}
    )
    for attempt in range(20):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                cookies = [c.split(";", 1)[0] for c in response.headers.get_all("set-cookie") or []]
                cookie = next((c for c in cookies if c.startswith(COOKIE)), None)
                token = response.headers.get("set-auth-token")
                if not cookie or not token:
                    raise SystemExit(f"face_seed: sign-in {email}: no session cookie or set-auth-token "
                                     f"(set-cookie {cookies!r}, set-auth-token {token!r})")
                return cookie, token
        except urllib.error.HTTPError as error:
            if error.code == 503 and attempt < 19:  # hashing queue full: back off, retry
                time.sleep(0.2)
                continue
            raise SystemExit(f"face_seed: sign-in {email}: HTTP {error.code} {error.read()[:300]!r}")
    raise SystemExit(f"face_seed: sign-in {email}: still overloaded")


def main() -> None:
    base, out = sys.argv[1], Path(sys.argv[2])
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    emails = [l for l in (out / "emails.txt").read_text().splitlines() if l]
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = list(pool.map(lambda email: sign_in(base, email), emails))
    (out / "face-cookies.txt").write_text("".join(cookie + "\n" for cookie, _ in rows))
    (out / "face-tokens.txt").write_text("".join(token + "\n" for _, token in rows))
    elapsed = time.monotonic() - started
    print(f"face_seed: {len(rows)} Better Auth sessions (sign-in/email) in {elapsed:.1f} s "
          f"({len(rows) / elapsed:.1f}/s, {concurrency} at a time); wrote face-cookies.txt, "
          f"face-tokens.txt in {out}")


if __name__ == "__main__":
    main()
