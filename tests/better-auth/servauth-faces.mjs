// servauth only (run.sh runs it with SERVER_KIND=servauth; Better Auth has no second face). Not named
// *.test.mjs, so that `node --test tests/better-auth/` against Better Auth leaves it out:
// the Better Auth face is an adapter over servauth's own accounts and sessions (issue 16), so
// what one face does the other sees. Needs SERVAUTH_INTERNAL_SECRET (the server's) for
// /api/internal/validate.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { BASE, ORIGIN, SERVAUTH, PASSWORD, cookieClient, newEmail, signUp, signIn, assertSignedOut } from "./helpers.mjs";

assert.ok(SERVAUTH, "servauth-faces.mjs is for SERVER_KIND=servauth only");
const INTERNAL_SECRET = process.env.SERVAUTH_INTERNAL_SECRET;
assert.ok(INTERNAL_SECRET, "SERVAUTH_INTERNAL_SECRET must be set (the server's)");

async function rest(path, { method = "GET", token, json, headers = {} } = {}) {
  const h = new Headers(headers);
  if (token) h.set("authorization", `Bearer ${token}`);
  if (json !== undefined) h.set("content-type", "application/json");
  const res = await fetch(`${BASE}${path}`, { method, headers: h, body: json === undefined ? undefined : JSON.stringify(json) });
  const text = await res.text();
  let body;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text };
}

async function accessToken(client) {
  const { data, error } = await client.$fetch("/token");
  assert.equal(error, null, JSON.stringify(error));
  return data.token;
}

async function validate(token) {
  const res = await rest("/api/internal/validate", {
    method: "POST", json: { token }, headers: { "x-service-auth": INTERNAL_SECRET },
  });
  assert.equal(res.status, 200, res.text);
  return res.body;
}

describe("one servauth behind both faces", () => {
  test("/api/auth/token is a servauth access token: /auth/me, /auth/sessions and validate accept it", async () => {
    const { client } = cookieClient();
    const { user, email } = await signUp(client, { name: "Two Faces" });
    const session = (await client.getSession()).data.session;
    const token = await accessToken(client);

    const me = await rest("/auth/me", { token });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.body.id, user.id);
    assert.equal(me.body.email, email);
    assert.equal(me.body.name, "Two Faces", "servauth's user object shows the name");

    const sessions = await rest("/auth/sessions", { token });
    assert.equal(sessions.status, 200, sessions.text);
    const listed = sessions.body.sessions.find((s) => s.id === session.id);
    assert.ok(listed, `the Better Auth session ${session.id} is one of servauth's sessions`);
    assert.equal(listed.current, true);

    const v = await validate(token);
    assert.equal(v.active, true);
    assert.equal(v.sub, user.id);
    assert.equal(v.sid, session.id);
  });

  test("logout everywhere on servauth's face ends the Better Auth session", async () => {
    const { client } = cookieClient();
    await signUp(client);
    const token = await accessToken(client);
    const res = await rest("/auth/sessions", { method: "DELETE", token });
    assert.equal(res.status, 204, res.text);
    await assertSignedOut(client, "after DELETE /auth/sessions");
    assert.deepEqual(await validate(token), { active: false });
  });

  test("sign-out on the Better Auth face ends the session for validate too", async () => {
    const { client } = cookieClient();
    await signUp(client);
    const token = await accessToken(client);
    assert.equal((await validate(token)).active, true);
    assert.deepEqual((await client.signOut()).data, { success: true });
    assert.deepEqual(await validate(token), { active: false });
  });

  test("an account registered on servauth's face signs in on the Better Auth face, and back", async () => {
    const email = newEmail("rest").toLowerCase();
    const reg = await rest("/auth/register", { method: "POST", json: { email, password: PASSWORD, client: "native" } });
    assert.equal(reg.status, 201, reg.text);
    const { client } = cookieClient();
    const si = await signIn(client, email);
    assert.equal(si.user.id, reg.body.user.id);
    // Better Auth's user always has a string name; servauth's may have none (null there).
    assert.equal(typeof si.user.name, "string");
    if (reg.body.user.name != null) assert.equal(si.user.name, reg.body.user.name);

    const other = cookieClient();
    const up = await signUp(other.client, { name: "From BA" });
    const login = await rest("/auth/login", { method: "POST", json: { email: up.email, password: PASSWORD, client: "native" } });
    assert.equal(login.status, 200, login.text);
    assert.equal(login.body.user.id, up.user.id);
    assert.equal(login.body.user.name, "From BA");
  });

  test("PUT /auth/me {name} shows in get-session", async () => {
    const { client } = cookieClient();
    await signUp(client, { name: "Old Name" });
    const token = await accessToken(client);
    const put = await rest("/auth/me", { method: "PUT", token, json: { name: "New Name" } });
    assert.equal(put.status, 200, put.text);
    assert.equal((await client.getSession()).data.user.name, "New Name");
  });

  test("GET /api/auth/jwks has the keys of /.well-known/jwks.json", async () => {
    const a = await rest("/api/auth/jwks", { headers: { origin: ORIGIN } });
    const b = await rest("/.well-known/jwks.json");
    assert.equal(a.status, 200, a.text);
    assert.equal(b.status, 200, b.text);
    const byKid = (keys) => Object.fromEntries(keys.map((k) => [k.kid, k]));
    assert.deepEqual(byKid(a.body.keys), byKid(b.body.keys));
  });
});
