// The unmodified better-auth@1.7.25 client against the server at AUTH_BASE, in cookie mode
// (a cookie jar around fetch + a trusted Origin header) and in bearer mode (set-auth-token
// kept from onSuccess, sent back with auth: {type: "Bearer"}). The same file runs against a
// real Better Auth server (SERVER_KIND=better-auth) and against servauth (SERVER_KIND=servauth);
// where servauth is stricter by design, each side's documented behaviour is asserted.
//
//   AUTH_BASE=http://127.0.0.1:3999 SERVER_KIND=better-auth node --test tests/better-auth/
//
// Raw wire assertions the client cannot see (cookie bytes, origin checks, 404s) are in
// wire.test.mjs.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  SERVAUTH, ORIGIN, PASSWORD, PASSWORD_2, PASSWORD_3, SESSION_COOKIE, DONT_REMEMBER_COOKIE, DAY, HOUR, SECOND,
  cookieClient, bearerClient, raw, newEmail, signUp, signIn, assertError, assertSignedOut, assertDate,
  decodeJwt, verifyJwt, waitForMail, mailCount, linkToken,
} from "./helpers.mjs";

describe("cookie mode", () => {
  test("sign-up with a name answers the user and a session token, and sets the session cookie", async () => {
    const { client, jar } = cookieClient();
    const email = newEmail("signup");
    const before = Date.now();
    const { data, error } = await client.signUp.email({ email, password: PASSWORD, name: "Ann Example" });
    assert.equal(error, null, JSON.stringify(error));
    assert.match(data.token, /^[A-Za-z0-9]{16,}$/, "the session token is opaque alphanumerics");
    assert.equal(data.user.email, email.toLowerCase(), "the address is lower-cased");
    assert.equal(data.user.name, "Ann Example");
    assert.equal(data.user.emailVerified, false);
    assert.equal(typeof data.user.id, "string");
    assertDate(data.user.createdAt, "user.createdAt", before, 60 * SECOND);
    assertDate(data.user.updatedAt, "user.updatedAt", before, 60 * SECOND);
    assert.equal(data.user.image ?? null, null);
    assert.ok(jar.cookies.has(SESSION_COOKIE), "the session cookie is in the jar");
    assert.ok(!jar.cookies.has(DONT_REMEMBER_COOKIE), "no dont_remember cookie by default");
  });

  test("get-session: the user, session.token equal to the sign-up token, dates revived as Date", async () => {
    const { client } = cookieClient();
    const before = Date.now();
    const up = await signUp(client, { name: "Get Session" });
    const { data, error } = await client.getSession();
    assert.equal(error, null, JSON.stringify(error));
    assert.equal(data.user.id, up.user.id);
    assert.equal(data.user.email, up.email);
    assert.equal(data.user.name, "Get Session");
    assert.equal(data.session.token, up.token, "session.token is the token sign-up answered");
    assert.equal(data.session.userId, up.user.id);
    assert.equal(typeof data.session.id, "string");
    assert.equal(typeof data.session.ipAddress, "string");
    assert.equal(typeof data.session.userAgent, "string");
    assertDate(data.session.createdAt, "session.createdAt", before, 60 * SECOND);
    assertDate(data.session.updatedAt, "session.updatedAt", before, 60 * SECOND);
    assertDate(data.session.expiresAt, "session.expiresAt", before + 7 * DAY, HOUR);
    assertDate(data.user.createdAt, "user.createdAt");
  });

  test("sign-out answers {success: true}, clears the cookie, and get-session is null after it", async () => {
    const { client, jar } = cookieClient();
    await signUp(client);
    const out = await client.signOut();
    assert.equal(out.error, null, JSON.stringify(out.error));
    assert.deepEqual(out.data, { success: true });
    assert.ok(!jar.cookies.has(SESSION_COOKIE), "sign-out expires the session cookie");
    await assertSignedOut(client, "after sign-out");
  });

  test("sign-out without a session still answers {success: true}", async () => {
    const { client } = cookieClient();
    const out = await client.signOut();
    assert.equal(out.error, null, JSON.stringify(out.error));
    assert.deepEqual(out.data, { success: true });
  });

  test("get-session without a session is data null, error null", async () => {
    const { client } = cookieClient();
    await assertSignedOut(client, "for a fresh client");
  });

  test("sign-in with rememberMe: false: a one-day session, session cookie without Max-Age, dont_remember", async () => {
    const a = cookieClient();
    const { email, user } = await signUp(a.client);
    const { client, jar } = cookieClient();
    const before = Date.now();
    const data = await signIn(client, email, PASSWORD, { rememberMe: false });
    assert.equal(data.redirect, false);
    assert.equal(data.user.id, user.id);
    assert.equal(data.url, undefined);
    const cookie = jar.last.find((c) => c.name === SESSION_COOKIE);
    assert.ok(cookie, "the session cookie is set");
    assert.equal(cookie.attrs["max-age"], undefined, "a browser-session cookie: no Max-Age");
    assert.equal(cookie.attrs.expires, undefined, "and no Expires");
    assert.ok(jar.cookies.has(DONT_REMEMBER_COOKIE), "the dont_remember cookie is set");
    const s = await client.getSession();
    assert.equal(s.data.session.token, data.token);
    assertDate(s.data.session.expiresAt, "session.expiresAt", before + DAY, HOUR);
  });

  test("sign-in with the default rememberMe: a seven-day session", async () => {
    const a = cookieClient();
    const { email } = await signUp(a.client);
    const { client, jar } = cookieClient();
    const data = await signIn(client, email);
    assert.equal(data.redirect, false);
    assert.equal(jar.last.find((c) => c.name === SESSION_COOKIE)?.attrs["max-age"], String(7 * 24 * 3600));
    assert.ok(!jar.cookies.has(DONT_REMEMBER_COOKIE));
    const s = await client.getSession();
    assert.equal(s.data.session.token, data.token);
    assert.notEqual(data.token, (await a.client.getSession()).data.session.token, "a new session");
  });

  test("sign-in takes the address in any case", async () => {
    const a = cookieClient();
    const { email } = await signUp(a.client);
    const { client } = cookieClient();
    await signIn(client, email.toUpperCase());
  });

  test("a wrong password or an unknown address is 401 INVALID_EMAIL_OR_PASSWORD, and no cookie", async () => {
    const a = cookieClient();
    const { email } = await signUp(a.client);
    const { client, jar } = cookieClient();
    assertError(await client.signIn.email({ email, password: PASSWORD_2 }), 401, "INVALID_EMAIL_OR_PASSWORD");
    assertError(await client.signIn.email({ email: newEmail("nobody"), password: PASSWORD }), 401,
      "INVALID_EMAIL_OR_PASSWORD");
    assert.equal(jar.cookies.size, 0);
    await assertSignedOut(client, "after failed sign-ins");
  });

  test("a duplicate sign-up is 422 USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL, also in another case", async () => {
    const a = cookieClient();
    const { email } = await signUp(a.client);
    const { client, jar } = cookieClient();
    assertError(await client.signUp.email({ email, password: PASSWORD, name: "Again" }), 422,
      "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL");
    assertError(await client.signUp.email({ email: email.toUpperCase(), password: PASSWORD_2, name: "Again" }), 422,
      "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL");
    assert.equal(jar.cookies.size, 0);
  });

  test("sign-up refuses a bad address and a missing name with 400 VALIDATION_ERROR", async () => {
    const { client } = cookieClient();
    assertError(await client.signUp.email({ email: "not-an-address", password: PASSWORD, name: "X" }), 400,
      "VALIDATION_ERROR");
    assertError(await client.signUp.email({ email: newEmail(), password: PASSWORD }), 400, "VALIDATION_ERROR");
  });

  test("password length: 5 characters is PASSWORD_TOO_SHORT on both; 10 characters only on servauth (min 15)", async () => {
    const { client } = cookieClient();
    assertError(await client.signUp.email({ email: newEmail(), password: "short", name: "X" }), 400,
      "PASSWORD_TOO_SHORT");
    assertError(await client.signUp.email({ email: newEmail(), password: "p".repeat(129) + "1", name: "X" }), 400,
      "PASSWORD_TOO_LONG");
    const ten = await client.signUp.email({ email: newEmail(), password: "kq7-vbm2zx", name: "X" });
    if (SERVAUTH) {
      // servauth's policy (README: stricter than Better Auth): at least 15 characters.
      assertError(ten, 400, "PASSWORD_TOO_SHORT");
    } else {
      // Better Auth's default minPasswordLength is 8.
      assert.equal(ten.error, null, JSON.stringify(ten.error));
    }
  });

  test("update-user (name, image) answers {status: true} and get-session reflects it; image null clears it", async () => {
    const { client } = cookieClient();
    const { user } = await signUp(client, { name: "Before" });
    const image = "https://img.example.test/a.png";
    const up = await client.updateUser({ name: "After", image });
    assert.equal(up.error, null, JSON.stringify(up.error));
    assert.deepEqual(up.data, { status: true });
    const s = await client.getSession();
    assert.equal(s.data.user.id, user.id);
    assert.equal(s.data.user.name, "After");
    assert.equal(s.data.user.image, image);
    assertDate(s.data.user.updatedAt, "user.updatedAt");
    const cleared = await client.updateUser({ image: null });
    assert.deepEqual(cleared.data, { status: true });
    const s2 = await client.getSession();
    assert.equal(s2.data.user.image ?? null, null);
    assert.equal(s2.data.user.name, "After", "an absent field is left as it is");
  });

  test("update-user: a 101-character name and a non-http image URL, per each server's rule", async () => {
    const { client } = cookieClient();
    await signUp(client, { name: "Kept" });
    const long = await client.updateUser({ name: "n".repeat(101) });
    const script = await client.updateUser({ image: "javascript:alert(1)" });
    const s = (await client.getSession()).data.user;
    if (SERVAUTH) {
      // servauth's user: name 1-100 characters, image an absolute http(s) URL (or null).
      assertError(long, 400, "VALIDATION_ERROR");
      assertError(script, 400, "VALIDATION_ERROR");
      assert.equal(s.name, "Kept", "a refused update changes nothing");
      assert.equal(s.image ?? null, null);
    } else {
      // Better Auth stores any string.
      assert.deepEqual(long.data, { status: true });
      assert.deepEqual(script.data, { status: true });
      assert.equal(s.name, "n".repeat(101));
      assert.equal(s.image, "javascript:alert(1)");
    }
  });

  test("update-user refuses an email change (400 EMAIL_CAN_NOT_BE_UPDATED) and needs a session (401)", async () => {
    const { client } = cookieClient();
    await signUp(client);
    assertError(await client.updateUser({ email: newEmail() }), 400, "EMAIL_CAN_NOT_BE_UPDATED");
    const anon = cookieClient();
    assertError(await anon.client.updateUser({ name: "Nobody" }), 401, "UNAUTHORIZED");
  });

  test("list-sessions lists every live session of the user, with tokens and revived dates", async () => {
    const a = cookieClient();
    const { email, user, token } = await signUp(a.client);
    const b = cookieClient();
    const other = await signIn(b.client, email);
    const stranger = cookieClient();
    await signUp(stranger.client);
    const mine = (await a.client.getSession()).data.session;
    const theirs = (await b.client.getSession()).data.session;
    const { data, error } = await a.client.listSessions();
    assert.equal(error, null, JSON.stringify(error));
    assert.ok(Array.isArray(data));
    assert.deepEqual(data.map((s) => s.id).sort(), [mine.id, theirs.id].sort(), "the user's two sessions");
    assert.equal(data.find((s) => s.id === mine.id).token, token, "the caller's own session shows its token");
    const listedOther = data.find((s) => s.id === theirs.id);
    if (SERVAUTH) {
      // servauth keeps a session token only as its SHA-256 (issue 16), so another session's
      // token cannot be shown: its id stands in, a handle that revoke-session takes.
      assert.notEqual(listedOther.token, other.token);
      assert.equal(listedOther.token, theirs.id);
    } else {
      // Better Auth lists every session's raw token.
      assert.equal(listedOther.token, other.token);
    }
    for (const s of data) {
      assert.equal(s.userId, user.id);
      assert.equal(typeof s.id, "string");
      assertDate(s.expiresAt, "expiresAt", Date.now() + 7 * DAY, HOUR);
      assertDate(s.createdAt, "createdAt");
    }
    assertError(await cookieClient().client.listSessions(), 401, "UNAUTHORIZED");
  });

  test("revoke-session with a listed session's token ends that session only", async () => {
    const a = cookieClient();
    const { email, token } = await signUp(a.client);
    const b = cookieClient();
    await signIn(b.client, email);
    const otherId = (await b.client.getSession()).data.session.id;
    const listed = (await a.client.listSessions()).data.find((s) => s.id === otherId);
    assert.ok(listed, "the other session is listed");
    const r = await a.client.revokeSession({ token: listed.token });
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.data, { status: true });
    await assertSignedOut(b.client, "after its session was revoked");
    assert.equal((await a.client.getSession()).data.session.token, token, "the caller's session lives");
    assert.deepEqual((await a.client.listSessions()).data.map((s) => s.token), [token]);
    // An unknown token, or another user's, answers the same and ends nothing.
    assert.deepEqual((await a.client.revokeSession({ token: "no-such-token" })).data, { status: true });
    const stranger = cookieClient();
    const theirs = await signUp(stranger.client);
    assert.deepEqual((await a.client.revokeSession({ token: theirs.token })).data, { status: true });
    assert.equal((await stranger.client.getSession()).data.session.token, theirs.token,
      "another user's session cannot be revoked");
    // The client sends GET for a call without arguments; a POST without a token is refused.
    const empty = await raw("/revoke-session", {
      method: "POST", headers: { origin: ORIGIN, cookie: a.jar.header() }, json: {},
    });
    assert.equal(empty.status, 400, empty.text);
    assert.equal(empty.json?.code, "VALIDATION_ERROR");
  });

  test("revoke-other-sessions ends every session but the caller's", async () => {
    const a = cookieClient();
    const { email, token } = await signUp(a.client);
    const b = cookieClient();
    const c = cookieClient();
    await signIn(b.client, email);
    await signIn(c.client, email);
    assert.equal((await a.client.listSessions()).data.length, 3);
    const r = await a.client.revokeOtherSessions();
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.data, { status: true });
    await assertSignedOut(b.client, "(b) after revoke-other-sessions");
    await assertSignedOut(c.client, "(c) after revoke-other-sessions");
    assert.equal((await a.client.getSession()).data.session.token, token);
    assert.deepEqual((await a.client.listSessions()).data.map((s) => s.token), [token]);
  });

  test("revoke-sessions ends every session, the caller's too, and expires its cookie", async () => {
    const a = cookieClient();
    const { email } = await signUp(a.client);
    const b = cookieClient();
    await signIn(b.client, email);
    const r = await a.client.revokeSessions();
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.data, { status: true });
    const expired = a.jar.last.find((c) => c.name === SESSION_COOKIE);
    assert.ok(expired && expired.attrs["max-age"] === "0", "revoke-sessions expires the session cookie (1.7.25)");
    await assertSignedOut(a.client, "(caller) after revoke-sessions");
    await assertSignedOut(b.client, "(other) after revoke-sessions");
    const again = cookieClient();
    await signIn(again.client, email);
  });

  test("change-password with revokeOtherSessions: a new session token, the others ended, only the new password works", async () => {
    const a = cookieClient();
    const { email, token } = await signUp(a.client);
    const b = cookieClient();
    await signIn(b.client, email);
    assertError(await a.client.changePassword({ currentPassword: PASSWORD_3, newPassword: PASSWORD_2 }), 400,
      "INVALID_PASSWORD");
    const cp = await a.client.changePassword({ currentPassword: PASSWORD, newPassword: PASSWORD_2, revokeOtherSessions: true });
    assert.equal(cp.error, null, JSON.stringify(cp.error));
    assert.equal(typeof cp.data.token, "string");
    assert.notEqual(cp.data.token, token, "a new session");
    assert.equal(cp.data.user.email, email);
    const s = await a.client.getSession();
    assert.equal(s.data.session.token, cp.data.token, "the caller continues on the new session");
    await assertSignedOut(b.client, "(other) after change-password with revokeOtherSessions");
    assert.deepEqual((await a.client.listSessions()).data.map((x) => x.token), [cp.data.token]);
    const c = cookieClient();
    assertError(await c.client.signIn.email({ email, password: PASSWORD }), 401, "INVALID_EMAIL_OR_PASSWORD");
    await signIn(c.client, email, PASSWORD_2);
  });

  test("change-password without revokeOtherSessions: token null; other sessions per each server's rule", async () => {
    const a = cookieClient();
    const { email, token } = await signUp(a.client);
    const b = cookieClient();
    await signIn(b.client, email);
    assertError(await a.client.changePassword({ currentPassword: PASSWORD, newPassword: "short" }), 400,
      "PASSWORD_TOO_SHORT");
    const cp = await a.client.changePassword({ currentPassword: PASSWORD, newPassword: PASSWORD_2 });
    assert.equal(cp.error, null, JSON.stringify(cp.error));
    assert.equal(cp.data.token, null);
    assert.equal(cp.data.user.email, email);
    assert.equal((await a.client.getSession()).data.session.token, token, "the caller's session lives");
    if (SERVAUTH) {
      // servauth (docs/API.md, POST /auth/password/change): a password change revokes every
      // other session, whatever the client asks.
      await assertSignedOut(b.client, "(other) after a servauth password change");
    } else {
      // Better Auth keeps the other sessions unless revokeOtherSessions is true.
      assert.ok((await b.client.getSession()).data, "Better Auth keeps the other session");
    }
    await signIn(cookieClient().client, email, PASSWORD_2);
  });

  test("jwt plugin: $fetch('/token') answers a JWT for the user that verifies against jwks()", async () => {
    const { client } = cookieClient();
    const { user } = await signUp(client);
    const { data, error } = await client.$fetch("/token");
    assert.equal(error, null, JSON.stringify(error));
    assert.match(data.token, /^eyJ/);
    const keys = await client.jwks();
    assert.equal(keys.error, null, JSON.stringify(keys.error));
    assert.ok(Array.isArray(keys.data.keys) && keys.data.keys.length >= 1, "jwks() lists keys");
    for (const k of keys.data.keys) {
      assert.equal(typeof k.kid, "string");
      assert.equal(typeof k.kty, "string");
      assert.equal(k.d, undefined, "no private key material in the JWKS");
    }
    const payload = verifyJwt(data.token, keys.data.keys);
    assert.equal(payload.sub, user.id);
    const now = Date.now() / 1000;
    assert.ok(payload.exp > now && payload.exp <= now + 24 * 3600, `exp ${payload.exp} is in the near future`);
    assert.ok(payload.iat <= now + 60);
    const anon = cookieClient();
    assertError(await anon.client.$fetch("/token"), 401, "UNAUTHORIZED");
  });

  test("$fetch('/ok') answers {ok: true}", async () => {
    const { client } = cookieClient();
    const { data, error } = await client.$fetch("/ok");
    assert.equal(error, null, JSON.stringify(error));
    assert.deepEqual(data, { ok: true });
  });

  test("delete-user with the password: the user is gone, the cookie expired, sign-in refused", async () => {
    const a = cookieClient();
    const { email } = await signUp(a.client);
    const b = cookieClient();
    await signIn(b.client, email);
    assertError(await a.client.deleteUser({ password: PASSWORD_2 }), 400, "INVALID_PASSWORD");
    const d = await a.client.deleteUser({ password: PASSWORD });
    assert.equal(d.error, null, JSON.stringify(d.error));
    assert.deepEqual(d.data, { success: true, message: "User deleted" });
    assert.ok(!a.jar.cookies.has(SESSION_COOKIE), "the session cookie is expired");
    await assertSignedOut(a.client, "after delete-user");
    await assertSignedOut(b.client, "(other session) after delete-user");
    assertError(await cookieClient().client.signIn.email({ email, password: PASSWORD }), 401,
      "INVALID_EMAIL_OR_PASSWORD");
    // The address is free again.
    await signUp(cookieClient().client, { email });
  });
});

describe("bearer mode", () => {
  test("sign-up, get-session, update-user, list, revoke-other-sessions, token, sign-out through Authorization: Bearer", async () => {
    const { client, state } = bearerClient();
    const email = newEmail("bearer");
    const up = await client.signUp.email({ email, password: PASSWORD, name: "Bea Rer" });
    assert.equal(up.error, null, JSON.stringify(up.error));
    assert.ok(state.token.startsWith(`${up.data.token}.`), `set-auth-token ${state.token} is the signed token`);
    assert.match(state.token.slice(up.data.token.length + 1), /^[A-Za-z0-9+/]{43}=$/);

    const s = await client.getSession();
    assert.equal(s.error, null, JSON.stringify(s.error));
    assert.equal(s.data.user.id, up.data.user.id);
    assert.equal(s.data.session.token, up.data.token);
    assertDate(s.data.session.expiresAt, "session.expiresAt", Date.now() + 7 * DAY, HOUR);

    const u = await client.updateUser({ name: "Bea Bearer", image: "https://img.example.test/b.png" });
    assert.deepEqual(u.data, { status: true });
    const s2 = await client.getSession();
    assert.equal(s2.data.user.name, "Bea Bearer");
    assert.equal(s2.data.user.image, "https://img.example.test/b.png");

    const other = bearerClient();
    const si = await signIn(other.client, email);
    assert.ok(other.state.token.startsWith(`${si.token}.`));
    assert.equal((await other.client.getSession()).data.session.token, si.token);
    const ids = [s.data.session.id, (await other.client.getSession()).data.session.id].sort();
    const listed = (await client.listSessions()).data;
    assert.deepEqual(listed.map((x) => x.id).sort(), ids);
    assert.equal(listed.find((x) => x.id === s.data.session.id).token, up.data.token);

    const jwt = await client.$fetch("/token");
    assert.equal(jwt.error, null, JSON.stringify(jwt.error));
    assert.equal(decodeJwt(jwt.data.token).payload.sub, up.data.user.id);

    assert.deepEqual((await client.revokeOtherSessions()).data, { status: true });
    await assertSignedOut(other.client, "(other bearer) after revoke-other-sessions");
    assert.equal((await client.getSession()).data.session.token, up.data.token);

    assert.deepEqual((await client.signOut()).data, { success: true });
    await assertSignedOut(client, "after sign-out in bearer mode");
  });

  test("sign-in with rememberMe: false and revoke-session by listed token", async () => {
    const seed = cookieClient();
    const { email } = await signUp(seed.client);
    const { client, state } = bearerClient();
    const before = Date.now();
    const si = await signIn(client, email, PASSWORD, { rememberMe: false });
    assert.ok(state.token.startsWith(`${si.token}.`));
    const s = await client.getSession();
    assert.equal(s.data.session.token, si.token);
    if (SERVAUTH) {
      // servauth keeps rememberMe with the session (docs/ba-plan: a one-day session, never
      // slid), so it holds in bearer mode too.
      assertDate(s.data.session.expiresAt, "session.expiresAt", before + DAY, HOUR);
    } else {
      // Better Auth knows rememberMe: false only from the dont_remember cookie, which a bearer
      // client never sends: the first get-session finds the one-day session older than
      // updateAge and slides it to seven days.
      assertDate(s.data.session.expiresAt, "session.expiresAt", before + 7 * DAY, HOUR);
    }
    const listed = (await client.listSessions()).data.find((x) => x.token !== si.token);
    assert.ok(listed, "the seed session is listed");
    assert.deepEqual((await client.revokeSession({ token: listed.token })).data, { status: true });
    await assertSignedOut(seed.client, "(cookie session) revoked from a bearer session");
    assert.ok((await client.getSession()).data);
  });

  test("change-password with revokeOtherSessions hands out a new token through set-auth-token", async () => {
    const { client, state } = bearerClient();
    const up = await signUp(client);
    const first = state.token;
    const cp = await client.changePassword({ currentPassword: PASSWORD, newPassword: PASSWORD_2, revokeOtherSessions: true });
    assert.equal(cp.error, null, JSON.stringify(cp.error));
    assert.notEqual(state.token, first, "a new set-auth-token");
    assert.ok(state.token.startsWith(`${cp.data.token}.`));
    assert.equal((await client.getSession()).data.session.token, cp.data.token);
    // The old token is dead.
    const old = bearerClient();
    old.state.token = first;
    await assertSignedOut(old.client, "with the pre-change token");
    assert.notEqual(cp.data.token, up.token);
  });

  test("duplicate sign-up (422), revoke-sessions, jwks() and /ok in bearer mode", async () => {
    const { client, state } = bearerClient();
    const { email, user } = await signUp(client);
    const dup = bearerClient();
    assertError(await dup.client.signUp.email({ email, password: PASSWORD, name: "Dup" }), 422,
      "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL");
    assert.equal(dup.state.token, "");
    const other = bearerClient();
    await signIn(other.client, email);
    const jwt = await client.$fetch("/token");
    assert.equal(verifyJwt(jwt.data.token, (await client.jwks()).data.keys).sub, user.id);
    assert.deepEqual((await client.$fetch("/ok")).data, { ok: true });
    assert.deepEqual((await client.revokeSessions()).data, { status: true });
    await assertSignedOut(client, "(caller) after revoke-sessions in bearer mode");
    await assertSignedOut(other.client, "(other) after revoke-sessions in bearer mode");
    assert.ok(state.token, "the stored token stays, but names no session");
  });

  test("wrong password in bearer mode is 401 INVALID_EMAIL_OR_PASSWORD and hands out no token", async () => {
    const seed = cookieClient();
    const { email } = await signUp(seed.client);
    const { client, state } = bearerClient();
    assertError(await client.signIn.email({ email, password: PASSWORD_2 }), 401, "INVALID_EMAIL_OR_PASSWORD");
    assert.equal(state.token, "");
  });
});

/**
 * Mail already sent for a fresh sign-up: servauth mails a verification link on registration
 * (its documented behaviour); Better Auth here does not (sendOnSignUp is off). Waiting for it
 * keeps the later "next mail" counts free of races with that queued mail.
 */
async function signUpMail(email) {
  if (SERVAUTH) {
    await waitForMail(email);
    return 1;
  }
  assert.equal(await mailCount(email), 0, "Better Auth sends no mail on sign-up here");
  return 0;
}

describe("mail flows", () => {
  test("password reset: mail with a token, reset-password, single use; sessions per each server's rule", async () => {
    const a = cookieClient();
    const { email } = await signUp(a.client);
    const seen = await signUpMail(email);
    const req = await a.client.requestPasswordReset({ email, redirectTo: "/reset" });
    assert.equal(req.error, null, JSON.stringify(req.error));
    assert.equal(req.data.status, true);
    const token = linkToken(await waitForMail(email, { skip: seen }));


    const anon = cookieClient();
    assertError(await anon.client.resetPassword({ newPassword: "short", token }), 400, "PASSWORD_TOO_SHORT");
    const reset = await anon.client.resetPassword({ newPassword: PASSWORD_2, token });
    assert.equal(reset.error, null, JSON.stringify(reset.error));
    assert.deepEqual(reset.data, { status: true });
    await assertSignedOut(anon.client, "reset-password does not sign in");

    if (SERVAUTH) {
      // servauth (README: stricter than Better Auth): a password reset ends every session.
      await assertSignedOut(a.client, "after a servauth password reset");
    } else {
      // Better Auth keeps sessions unless revokeSessionsOnPasswordReset.
      assert.ok((await a.client.getSession()).data, "Better Auth keeps the session after a reset");
    }
    assertError(await anon.client.resetPassword({ newPassword: PASSWORD_3, token }), 400, "INVALID_TOKEN");
    assertError(await anon.client.signIn.email({ email, password: PASSWORD }), 401, "INVALID_EMAIL_OR_PASSWORD");
    await signIn(anon.client, email, PASSWORD_2);
  });

  test("GET /reset-password/:token (the link of a Better Auth reset mail) redirects to callbackURL with the token", async () => {
    const a = cookieClient();
    const { email } = await signUp(a.client);
    const seen = await signUpMail(email);
    const req = await a.client.requestPasswordReset({ email, redirectTo: "/reset" });
    assert.equal(req.error, null, JSON.stringify(req.error));
    const token = linkToken(await waitForMail(email, { skip: seen }));
    const cb = await raw(`/reset-password/${encodeURIComponent(token)}?callbackURL=%2Freset`);
    assert.equal(cb.status, 302, cb.text);
    assert.equal(cb.headers.get("location"), `${ORIGIN}/reset?token=${token}`);
    const bad = await raw("/reset-password/nope?callbackURL=%2Freset");
    assert.equal(bad.status, 302, bad.text);
    assert.equal(bad.headers.get("location"), `${ORIGIN}/reset?error=INVALID_TOKEN`);
    const evil = await raw(`/reset-password/${encodeURIComponent(token)}?callbackURL=${encodeURIComponent("https://evil.test/r")}`);
    assert.equal(evil.status, 403, evil.text);
    assert.equal(evil.json?.code, "INVALID_CALLBACK_URL");
    // The redirect does not use the token up.
    const reset = await cookieClient().client.resetPassword({ newPassword: PASSWORD_2, token });
    assert.equal(reset.error, null, JSON.stringify(reset.error));
  });

  test("request-password-reset answers alike for an unknown address, refuses an untrusted redirectTo", async () => {
    const { client } = cookieClient();
    const email = newEmail("unknown");
    const req = await client.requestPasswordReset({ email, redirectTo: "/reset" });
    assert.equal(req.error, null, JSON.stringify(req.error));
    assert.equal(req.data.status, true);
    assertError(await client.requestPasswordReset({ email, redirectTo: "https://evil.test/steal" }), 403,
      "INVALID_REDIRECT_URL");
    assertError(await client.resetPassword({ newPassword: PASSWORD_2, token: "no-such-token" }), 400, "INVALID_TOKEN");
  });

  test("email verification: send-verification-email, verify-email marks the address verified", async () => {
    const a = cookieClient();
    const { email } = await signUp(a.client);
    assertError(await a.client.sendVerificationEmail({ email: newEmail("other"), callbackURL: "/v" }), 400,
      "EMAIL_MISMATCH");
    const seen = await signUpMail(email);
    const sent = await a.client.sendVerificationEmail({ email, callbackURL: "/verified" });
    assert.equal(sent.error, null, JSON.stringify(sent.error));
    assert.deepEqual(sent.data, { status: true });
    const token = linkToken(await waitForMail(email, { skip: seen }));
    const v = await a.client.verifyEmail({ query: { token } });
    assert.equal(v.error, null, JSON.stringify(v.error));
    assert.equal(v.data.status, true);
    assert.equal((await a.client.getSession()).data.user.emailVerified, true);
    const again = await a.client.verifyEmail({ query: { token } });
    if (SERVAUTH) {
      // servauth (README: stricter than Better Auth): emailed tokens are single use.
      assertError(again, 401, "INVALID_TOKEN");
    } else {
      // Better Auth's verification token is a stateless JWT: reusable until it expires.
      assert.equal(again.error, null, JSON.stringify(again.error));
    }
    assertError(await a.client.verifyEmail({ query: { token: "bogus" } }), 401, "INVALID_TOKEN");
    assertError(await a.client.sendVerificationEmail({ email, callbackURL: "https://evil.test/v" }), 403,
      "INVALID_CALLBACK_URL");
  });

  test("change-email without the current password", async () => {
    const a = cookieClient();
    await signUp(a.client);
    const r = await a.client.changeEmail({ newEmail: newEmail("nopassword").toLowerCase() });
    if (SERVAUTH) {
      assertError(r, 400, "VALIDATION_ERROR");
    } else {
      assert.equal(r.error, null, JSON.stringify(r.error));
    }
  });

  test("change-email: a link to the new address; following it changes the address", async () => {
    const a = cookieClient();
    const { email } = await signUp(a.client);
    const next = newEmail("changed").toLowerCase();
    // servauth asks for the current password (Better Auth does not, and ignores the field).
    const r = await a.client.changeEmail({ newEmail: next, callbackURL: "/after", password: PASSWORD });
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.deepEqual(r.data, { status: true });
    const token = linkToken(await waitForMail(next));
    const v = await a.client.verifyEmail({ query: { token } });
    assert.equal(v.error, null, JSON.stringify(v.error));
    assert.equal(v.data.status, true);
    const s = await a.client.getSession();
    assert.ok(s.data, "the confirming session lives");
    assert.equal(s.data.user.email, next);
    assertError(await cookieClient().client.signIn.email({ email, password: PASSWORD }), 401,
      "INVALID_EMAIL_OR_PASSWORD");
    await signIn(cookieClient().client, next);
  });
});
