// The client half of import.sh (the end-to-end test of `servauth import better-auth`), one
// phase per run, each a `node --test` file of its own (not *.test.mjs: a directory run of the
// client suite leaves it out). State passes between phases in the JSON file IMPORT_STATE.
//
//   IMPORT_PHASE=seed     SERVER_KIND=better-auth AUTH_BASE=<import-server.mjs>  BA_DATABASE=<its db>
//       signs users up and in on a real Better Auth through the unmodified client (cookie jar +
//       Origin, bearer for one session), signs one session out, and writes every user, password,
//       cookie and token to IMPORT_STATE; then ages one more session past its expiry straight
//       in the Better Auth database and counts its rows.
//   IMPORT_PHASE=summary  SERVER_KIND=servauth IMPORT_RUN=first|second IMPORT_OUT=<prefix>
//       judges one run of `servauth import better-auth` (dry: one with --dry-run):
//       <prefix>.rc, <prefix>.stdout, <prefix>.stderr (exit 0, the `imported:` line's counts,
//       the expired session skipped, no `refused` line).
//   IMPORT_PHASE=verify   SERVER_KIND=servauth AUTH_BASE=<servauth> IMPORT_RUN=first|second
//       the old cookies and bearer token on servauth's Better Auth face: same users (the Better
//       Auth ids), the same session tokens and expiry; the signed-out and expired ones are dead; every
//       password signs in (twice: the second after servauth re-hashed it), a wrong one fails.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import {
  BASE, KIND, PASSWORD, PASSWORD_2, SESSION_COOKIE, DONT_REMEMBER_COOKIE, SECOND,
  cookieClient, bearerClient, newEmail, signUp, signIn, assertError, assertSignedOut,
} from "./helpers.mjs";

const PHASE = process.env.IMPORT_PHASE;
const STATE = process.env.IMPORT_STATE;
assert.ok(["seed", "summary", "verify"].includes(PHASE), `IMPORT_PHASE must be seed, summary or verify, not ${PHASE}`);
assert.ok(STATE, "IMPORT_STATE (the state file) must be set");

// NFKC changes "ﬁ" (U+FB01), the full-width letters and the decomposed "é" (e + U+0301):
// Better Auth hashes the NFKC form; servauth must verify the same bytes.
const UNICODE_PASSWORD = "pässwörd ﬁx Ｐａｓｓ cafe\u0301 日本語 ✓ 1";
// Better Auth's minimum is 8; servauth's sign-up wants 15, but an imported account keeps its password.
const SHORT_PASSWORD = "shortpass12";
const WRONG_PASSWORD = "not the password at all 9";

/** The Set-Cookie-free view of a jar: {name: value}, URL-encoded as the server set them. */
function jarCookies(jar) {
  return Object.fromEntries(jar.cookies);
}

function clientWith(cookies) {
  const c = cookieClient();
  for (const [k, v] of Object.entries(cookies)) c.jar.cookies.set(k, v);
  return c;
}

function bearerWith(token) {
  const b = bearerClient();
  b.state.token = token;
  return b;
}

async function session(client, why) {
  const { data, error } = await client.getSession();
  assert.equal(error, null, `get-session errored ${why}: ${JSON.stringify(error)}`);
  assert.ok(data, `expected a session ${why}, got null`);
  return data;
}

const iso = (d) => (d instanceof Date ? d.toISOString() : String(d));

function closeTo(actual, expectedIso, slackMs, label) {
  assert.ok(actual instanceof Date && !Number.isNaN(actual.getTime()), `${label} is not a Date: ${actual}`);
  const want = new Date(expectedIso).getTime();
  assert.ok(Math.abs(actual.getTime() - want) <= slackMs,
    `${label}: ${actual.toISOString()} is not within ${slackMs} ms of ${expectedIso}`);
}

if (PHASE === "seed") {
  assert.equal(KIND, "better-auth", "the seed phase runs against Better Auth");
  const state = { base: BASE, users: [], live: [], dead: [], expected: {} };

  async function record(user, { jar, bearer, label }) {
    const s = bearer ? await session(bearer.client, label) : await session(jar.client, label);
    assert.equal(s.user.id, user.id);
    const entry = {
      label,
      userId: user.id,
      email: user.email,
      token: s.session.token,
      sessionId: s.session.id,
      expiresAt: iso(s.session.expiresAt),
      userCreatedAt: iso(s.user.createdAt),
    };
    if (bearer) entry.bearer = bearer.state.token;
    else entry.cookies = jarCookies(jar.jar);
    return entry;
  }

  test("seed: a real Better Auth signs users up and in, and signs one session out", async () => {
    // Ann: a sign-up session and a second one from a sign-in with rememberMe: false.
    const a1 = cookieClient();
    const ann = await signUp(a1.client, { email: newEmail("ann"), password: PASSWORD, name: "Ann Import" });
    const a2 = cookieClient();
    await signIn(a2.client, ann.email, PASSWORD, { rememberMe: false });
    assert.ok(a2.jar.cookies.has(DONT_REMEMBER_COOKIE), "rememberMe: false sets dont_remember");

    // Bob: signs up, signs out (that session must stay dead), signs in again in bearer mode.
    const b1 = cookieClient();
    const bob = await signUp(b1.client, { email: newEmail("bob"), password: PASSWORD_2, name: "Bob Import" });
    const bobDead = await record(bob.user, { jar: b1, label: "bob's signed-out session" });
    const out = await b1.client.signOut();
    assert.deepEqual(out.data, { success: true });
    await assertSignedOut(clientWith(bobDead.cookies).client, "for bob's signed-out cookie on Better Auth");
    const b2 = bearerClient();
    await signIn(b2.client, bob.email, PASSWORD_2);
    assert.match(b2.state.token, /^[A-Za-z0-9]+\.[A-Za-z0-9+/=]+$/, "set-auth-token is token.signature");

    // Chloé: a non-ASCII name and a password that NFKC changes.
    const c1 = cookieClient();
    const chloe = await signUp(c1.client, { email: newEmail("chloe"), password: UNICODE_PASSWORD, name: "Chloé Ünïcode 日本" });

    // Dan: a password Better Auth takes but servauth's sign-up policy (15+) would not; a
    // second session of his is made to have expired (below): the import skips it.
    const d1 = cookieClient();
    const dan = await signUp(d1.client, { email: newEmail("dan"), password: SHORT_PASSWORD, name: "Dan Short" });
    const d2 = cookieClient();
    await signIn(d2.client, dan.email, SHORT_PASSWORD);
    const danExpired = await record(dan.user, { jar: d2, label: "dan's expired session" });

    for (const [u, password] of [[ann, PASSWORD], [bob, PASSWORD_2], [chloe, UNICODE_PASSWORD], [dan, SHORT_PASSWORD]]) {
      state.users.push({ id: u.user.id, email: u.email, name: u.user.name, password, createdAt: iso(u.user.createdAt) });
    }
    state.live.push(await record(ann.user, { jar: a1, label: "ann's sign-up session" }));
    state.live.push(await record(ann.user, { jar: a2, label: "ann's rememberMe: false session" }));
    state.live.push(await record(bob.user, { bearer: b2, label: "bob's bearer session" }));
    state.live.push(await record(chloe.user, { jar: c1, label: "chloé's sign-up session" }));
    state.live.push(await record(dan.user, { jar: d1, label: "dan's sign-up session" }));
    state.dead.push(bobDead, danExpired);
    state.expected = { users: state.users.length, sessions: state.live.length, expired: 1 };
    assert.equal(new Set(state.live.map((s) => s.token)).size, state.live.length, "five distinct sessions");
    writeFileSync(STATE, JSON.stringify(state, null, 2));
  });

  test("seed: the Better Auth database holds the users, their credential accounts and the sessions", async () => {
    // Straight in the database: one session is aged past its expiry (as old rows linger in a
    // Better Auth database), in the column's own format (timestamptz on PostgreSQL, Better
    // Auth's ISO-8601 text on SQLite); then the rows are counted.
    const state = JSON.parse(readFileSync(STATE, "utf8"));
    const source = process.env.BA_DATABASE;
    assert.ok(source, "BA_DATABASE must be set for the seed phase");
    const expiredToken = state.dead[1].token;
    const queries = {
      users: 'SELECT count(*) AS n FROM "user"',
      credentials: `SELECT count(*) AS n FROM "account" WHERE "providerId" = 'credential' AND "password" IS NOT NULL`,
      sessions: 'SELECT count(*) AS n FROM "session"',
      signedOut: 'SELECT count(*) AS n FROM "session" WHERE "token" = $1',
    };
    const past = new Date(Date.now() - 3600 * SECOND);
    const counts = {};
    let aged;
    if (/^postgres(ql)?:\/\//.test(source)) {
      const { default: pg } = await import("pg");
      const client = new pg.Client({ connectionString: source });
      await client.connect();
      try {
        aged = (await client.query('UPDATE "session" SET "expiresAt" = $1 WHERE "token" = $2', [past, expiredToken])).rowCount;
        for (const k of ["users", "credentials", "sessions"]) counts[k] = Number((await client.query(queries[k])).rows[0].n);
        counts.signedOut = Number((await client.query(queries.signedOut, [state.dead[0].token])).rows[0].n);
      } finally {
        await client.end();
      }
    } else {
      const { default: Database } = await import("better-sqlite3");
      const db = new Database(source.replace(/^sqlite:(\/\/)?/, ""));
      try {
        db.pragma("busy_timeout = 5000");
        aged = db.prepare('UPDATE "session" SET "expiresAt" = ? WHERE "token" = ?').run(past.toISOString(), expiredToken).changes;
        for (const k of ["users", "credentials", "sessions"]) counts[k] = Number(db.prepare(queries[k]).get().n);
        counts.signedOut = Number(db.prepare(queries.signedOut.replace("$1", "?")).get(state.dead[0].token).n);
      } finally {
        db.close();
      }
    }
    assert.equal(aged, 1, "dan's second session is aged past its expiry");
    assert.deepEqual(counts, { users: 4, credentials: 4, sessions: 6, signedOut: 0 },
      "4 users with a password each, 5 live sessions and an expired one, the signed-out one deleted");
    // (Not asked of Better Auth here: its get-session deletes an expired session's row.)
  });
}

if (PHASE === "summary") {
  const run = process.env.IMPORT_RUN;
  const prefix = process.env.IMPORT_OUT;
  assert.ok(["dry", "first", "second"].includes(run), "IMPORT_RUN must be dry, first or second");
  assert.ok(prefix, "IMPORT_OUT must be set");
  const state = JSON.parse(readFileSync(STATE, "utf8"));
  const rc = Number(readFileSync(`${prefix}.rc`, "utf8").trim());
  const stdout = readFileSync(`${prefix}.stdout`, "utf8");
  const stderr = readFileSync(`${prefix}.stderr`, "utf8");
  const shown = `exit ${rc}\n--- stdout\n${stdout}--- stderr\n${stderr}`;

  test(`summary (${run} import): exit 0, the counts, nothing refused`, () => {
    assert.equal(rc, 0, `servauth import better-auth should exit 0\n${shown}`);
    const refused = stderr.split("\n").filter((l) => /^refused (user|session) /.test(l));
    assert.deepEqual(refused, [], `no row may be refused\n${shown}`);
    // A real run's summary starts "imported:"; a dry run's says so before it.
    const line = stdout.split("\n").find((l) => (run === "dry" ? /^dry run\b.*imported:/i.test(l) : l.startsWith("imported:")));
    assert.ok(line, `stdout has no ${run === "dry" ? '"dry run … imported:"' : 'line starting "imported:"'}\n${shown}`);
    const imported = line.match(/imported:\s*(\d+) users?, (\d+) sessions?/);
    const present = line.match(/already present:\s*(\d+) users?, (\d+) sessions?/);
    const expired = line.match(/skipped:[^;]*?(\d+) expired sessions?/);
    const refusedCount = line.match(/refused:\s*(\d+)/);
    assert.ok(imported && present && expired && refusedCount, `cannot read the counts of: ${line}`);
    const got = {
      imported: { users: Number(imported[1]), sessions: Number(imported[2]) },
      present: { users: Number(present[1]), sessions: Number(present[2]) },
      expired: Number(expired[1]),
      refused: Number(refusedCount[1]),
    };
    const { users, sessions } = state.expected;
    const want = run === "second"
      ? { imported: { users: 0, sessions: 0 }, present: { users, sessions }, expired: 1, refused: 0 }
      : { imported: { users, sessions }, present: { users: 0, sessions: 0 }, expired: 1, refused: 0 };
    assert.deepEqual(got, want, `the summary line: ${line}`);
  });
}

if (PHASE === "verify") {
  assert.equal(KIND, "servauth", "the verify phase runs against servauth");
  const run = process.env.IMPORT_RUN ?? "first";
  const state = JSON.parse(readFileSync(STATE, "utf8"));
  const users = new Map(state.users.map((u) => [u.id, u]));

  test(`verify (after the ${run} import): every old session is the same user and session on servauth`, async () => {
    for (const old of state.live) {
      const u = users.get(old.userId);
      const client = old.bearer ? bearerWith(old.bearer).client : clientWith(old.cookies).client;
      const s = await session(client, `for ${old.label}`);
      assert.equal(s.user.id, u.id, `${old.label}: user.id is the Better Auth id`);
      assert.equal(s.user.email, u.email, `${old.label}: email`);
      assert.equal(s.user.name, u.name, `${old.label}: name`);
      assert.equal(s.user.emailVerified, false, `${old.label}: emailVerified`);
      closeTo(s.user.createdAt, u.createdAt, SECOND, `${old.label}: user.createdAt`);
      assert.equal(s.session.userId, u.id, `${old.label}: session.userId is the Better Auth id`);
      assert.equal(s.session.token, old.token, `${old.label}: session.token is the Better Auth token`);
      closeTo(s.session.expiresAt, old.expiresAt, 2 * SECOND, `${old.label}: session.expiresAt`);
    }
  });

  test(`verify (after the ${run} import): the signed-out and the expired session stay dead`, async () => {
    for (const old of state.dead) {
      assert.ok(old.cookies[SESSION_COOKIE], "the dead cookie was kept");
      await assertSignedOut(clientWith(old.cookies).client, `for ${old.label} on servauth`);
    }
  });

  test(`verify (after the ${run} import): every password signs in (twice), a wrong one does not`, async () => {
    for (const u of state.users) {
      for (const attempt of [1, 2]) {
        const { client } = cookieClient();
        const data = await signIn(client, u.email, u.password);
        assert.equal(data.user.id, u.id, `${u.email} sign-in #${attempt}: the Better Auth id`);
        const s = await session(client, `after ${u.email} signed in (#${attempt})`);
        assert.equal(s.user.id, u.id);
        assert.equal(s.user.name, u.name);
      }
      const { client, jar } = cookieClient();
      assertError(await client.signIn.email({ email: u.email, password: WRONG_PASSWORD }), 401, "INVALID_EMAIL_OR_PASSWORD");
      assert.equal(jar.cookies.size, 0, "no cookie for a wrong password");
    }
  });

  test(`verify (after the ${run} import): an imported address cannot sign up again`, async () => {
    const { client } = cookieClient();
    for (const u of state.users) {
      assertError(await client.signUp.email({ email: u.email.toUpperCase(), password: `${PASSWORD} again`, name: "Again" }),
        422, "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL");
    }
  });
}
