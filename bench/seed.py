#!/usr/bin/env python3
"""Seeds a fresh servauth for the benchmark (stdlib only, loopback only).

    seed.py BASE_URL DATA_DIR [USERS=200] [CONCURRENCY=4] [PREFIX=pool]

Registers USERS native-client accounts pool-<i>@bench.servauth.test with the password
'correct horse battery staple' (USERS Argon2 hashes, CONCURRENCY at a time), and writes to
DATA_DIR:
  emails.txt   the accounts (login rows cycle through them)
  access.txt   one access token per account (validate and /auth/me rows)
  refresh.txt  one refresh token per account (first tokens of the /auth/refresh pool)
With another PREFIX (run.sh's top-up of the refresh pool) it writes only
<PREFIX>-refresh.txt. Every request must succeed (201); anything else stops the seed with the answer.
"""
import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PASSWORD = "correct horse battery staple"


def register(base: str, prefix: str, i: int) -> tuple[str, str, str]:
    email = f"{prefix}-{i}@bench.servauth.test"
    body = json.dumps({"email": email, "password": PASSWORD, "client": "native"}).encode()
    request = urllib.request.Request(
        f"{base}/auth/register", data=body, headers={"content-type": "application/json"}
    )
    for attempt in range(20):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.load(response)
                return email, answer["access_token"], answer["refresh_token"]
        except urllib.error.HTTPError as error:
            if error.code == 503 and attempt < 19:  # hashing queue full: back off, retry
                time.sleep(0.2)
                continue
            raise SystemExit(f"seed: register {email}: HTTP {error.code} {error.read()[:300]!r}")
    raise SystemExit(f"seed: register {email}: still overloaded")


def main() -> None:
    base, out = sys.argv[1], Path(sys.argv[2])
    users = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    prefix = sys.argv[5] if len(sys.argv) > 5 else "pool"
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = list(pool.map(lambda i: register(base, prefix, i), range(users)))
    files = (("emails.txt", 0), ("access.txt", 1), ("refresh.txt", 2))
    if prefix != "pool":
        files = ((f"{prefix}-refresh.txt", 2),)
    for name, column in files:
        (out / name).write_text("".join(row[column] + "\n" for row in rows))
    elapsed = time.monotonic() - started
    print(f"seed: {users} users registered in {elapsed:.1f} s ({users / elapsed:.1f}/s, "
          f"{concurrency} at a time); wrote {', '.join(name for name, _ in files)} in {out}")


if __name__ == "__main__":
    main()
