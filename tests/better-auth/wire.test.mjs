// Raw-fetch assertions on what the client cannot see: the signed cookie's exact bytes and
// attributes, set-auth-token / set-auth-jwt, the origin checks, routing and error envelopes.
// Same servers and variables as client.test.mjs.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  ORIGIN, EVIL, PASSWORD, SESSION_COOKIE, DONT_REMEMBER_COOKIE,
  raw, rawHttp, newEmail, sign, decodeJwt, verifyJwt,
} from "./helpers.mjs";

const SIGNED = /^([A-Za-z0-9]+)\.([A-Za-z0-9+/]{43}=)$/;

/** Signs up over raw fetch with a trusted Origin; returns the answer and its session cookie. */
async function rawSignUp(extra = {}) {
  const email = newEmail("wire");
  const res = await raw("/sign-up/email", {
    method: "POST",
    headers: { origin: ORIGIN },
    json: { email, password: PASSWORD, name: "Wire", ...extra },
  });
  assert.equal(res.status, 200, res.text);
  const cookie = res.cookies.find((c) => c.name === SESSION_COOKIE);
  assert.ok(cookie, `a ${SESSION_COOKIE} Set-Cookie: ${res.cookies.map((c) => c.line).join(" | ")}`);
  return { email: email.toLowerCase(), res, cookie, header: `${SESSION_COOKIE}=${cookie.value}` };
}

function assertExpired(res, name) {
  const c = res.cookies.find((x) => x.name === name);
  assert.ok(c, `${name} is expired: Set-Cookie lines ${res.cookies.map((x) => x.line).join(" | ")}`);
  assert.equal(c.value, "");
  assert.equal(c.attrs["max-age"], "0");
  assert.equal(c.attrs.path, "/");
  assert.equal(c.attrs.httponly, true);
  assert.equal(c.attrs.samesite, "Lax");
}

function assertEnvelope(res, status, code) {
  assert.equal(res.status, status, `${res.status} ${res.text}`);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  assert.equal(typeof res.json?.message, "string", res.text);
  assert.equal(res.json.code, code, res.text);
}

describe("the signed session cookie", () => {
  test("value = token.<44-char standard base64 HMAC-SHA256>, URL-encoded; HttpOnly; SameSite=Lax; Path=/", async () => {
    const { res, cookie } = await rawSignUp();
    const decoded = decodeURIComponent(cookie.value);
    const m = decoded.match(SIGNED);
    assert.ok(m, `cookie value ${decoded} is token.<standard padded base64>`);
    const [, token, sig] = m;
    assert.equal(token, res.json.token, "the part before the dot is the session token");
    assert.equal(cookie.value, encodeURIComponent(decoded), "the value is encodeURIComponent(token.sig): %2B %2F %3D");
    assert.ok(cookie.value.endsWith("%3D"), "the padding '=' travels as %3D");
    assert.ok(!/[+/=]/.test(cookie.value), "no raw + / = in the cookie value");
    assert.equal(sig, sign(token), "HMAC-SHA256 with the UTF-8 secret, standard base64 with padding");
    assert.equal(cookie.attrs.httponly, true);
    assert.equal(cookie.attrs.samesite, "Lax");
    assert.equal(cookie.attrs.path, "/");
    assert.equal(cookie.attrs["max-age"], String(7 * 24 * 3600));
    assert.equal(cookie.attrs.secure, undefined, "no Secure on an http public URL");
    assert.equal(cookie.attrs.domain, undefined);
    assert.equal(cookie.attrs.expires, undefined, "Max-Age only, never Expires");
    // The bearer plugin's header is the decoded value, exposed to browsers.
    assert.equal(res.headers.get("set-auth-token"), decoded);
    assert.match(res.headers.get("access-control-expose-headers") ?? "", /set-auth-token/i);
  });

  test("rememberMe: false: session cookie without Max-Age and a signed dont_remember=true", async () => {
    const { email } = await rawSignUp();
    const res = await raw("/sign-in/email", {
      method: "POST", headers: { origin: ORIGIN }, json: { email, password: PASSWORD, rememberMe: false },
    });
    assert.equal(res.status, 200, res.text);
    const session = res.cookies.find((c) => c.name === SESSION_COOKIE);
    assert.equal(session.attrs["max-age"], undefined);
    assert.match(decodeURIComponent(session.value), SIGNED);
    const dont = res.cookies.find((c) => c.name === DONT_REMEMBER_COOKIE);
    assert.ok(dont, "dont_remember is set");
    assert.equal(decodeURIComponent(dont.value), `true.${sign("true")}`);
    assert.equal(dont.attrs["max-age"], undefined);
    assert.equal(dont.attrs.httponly, true);
    assert.equal(dont.attrs.samesite, "Lax");
    assert.equal(dont.attrs.path, "/");
  });

  test("sign-out with the cookie and a trusted Origin expires the cookies with Max-Age=0", async () => {
    const { header } = await rawSignUp();
    const res = await raw("/sign-out", { method: "POST", headers: { origin: ORIGIN, cookie: header }, json: {} });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { success: true });
    assertExpired(res, SESSION_COOKIE);
    assertExpired(res, DONT_REMEMBER_COOKIE);
    const after = await raw("/get-session", { headers: { cookie: header } });
    assert.equal(after.text, "null", "the signed-out cookie is no session");
    assertExpired(after, SESSION_COOKIE); // a well-signed cookie of an ended session is expired
  });

  test("get-session: a tampered, truncated or base64url signature is no session (200 null, never a 500)", async () => {
    const { cookie } = await rawSignUp();
    const [token, sig] = decodeURIComponent(cookie.value).split(".");
    const good = await raw("/get-session", { headers: { cookie: `${SESSION_COOKIE}=${cookie.value}` } });
    assert.equal(good.status, 200);
    assert.equal(good.json.session.token, token);
    const flipped = (sig[0] === "A" ? "B" : "A") + sig.slice(1);
    const variants = {
      tampered: `${token}.${flipped}`,
      truncated: `${token}.${sig.slice(0, 43)}`,
      base64url: `${token}.${sig.replace(/\+/g, "-").replace(/\//g, "_")}`,
      unpadded: `${token}.${sig.replace(/=$/, "")}`,
      unsigned: token,
      otherToken: `${"x".repeat(token.length)}.${sig}`,
    };
    for (const [name, value] of Object.entries(variants)) {
      if (name === "base64url" && !/[+/]/.test(sig)) continue; // identical to the good one
      const res = await raw("/get-session", { headers: { cookie: `${SESSION_COOKIE}=${encodeURIComponent(value)}` } });
      assert.equal(res.status, 200, `${name}: ${res.status} ${res.text}`);
      assert.equal(res.text, "null", `${name} cookie must be no session`);
    }
  });

  test("get-session answers 200 null with no-store without a session, and set-auth-jwt with one", async () => {
    const none = await raw("/get-session");
    assert.equal(none.status, 200);
    assert.equal(none.text, "null");
    assert.match(none.headers.get("content-type") ?? "", /^application\/json/);
    assert.match(none.headers.get("cache-control") ?? "", /no-store/);

    const { header, res: up } = await rawSignUp();
    const res = await raw("/get-session", { headers: { cookie: header } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("cache-control") ?? "", /no-store/);
    assert.match(res.json.session.expiresAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, "dates with milliseconds and Z");
    assert.match(res.json.user.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const jwt = res.headers.get("set-auth-jwt");
    assert.ok(jwt, "the jwt plugin's set-auth-jwt header");
    const jwks = await raw("/jwks");
    assert.equal(jwks.status, 200);
    assert.equal(verifyJwt(jwt, jwks.json.keys).sub, up.json.user.id);
    assert.match(res.headers.get("access-control-expose-headers") ?? "", /set-auth-jwt/i);
  });
});

describe("bearer", () => {
  test("Authorization: Bearer with the signed token or the raw token is the session; a forged one is not", async () => {
    const { res: up } = await rawSignUp();
    const signed = up.headers.get("set-auth-token");
    const token = up.json.token;
    for (const [name, value] of [["signed", signed], ["raw", token], ["encoded", encodeURIComponent(signed)]]) {
      const res = await raw("/get-session", { headers: { authorization: `Bearer ${value}` } });
      assert.equal(res.status, 200, `${name}: ${res.text}`);
      assert.equal(res.json?.session?.token, token, `${name} bearer token is the session`);
    }
    const forged = `${token}.${sign(token, "some other secret")}`;
    const res = await raw("/get-session", { headers: { authorization: `Bearer ${forged}` } });
    assert.equal(res.text, "null", "a token signed with another secret is no session");
  });

  test("a bearer-only POST (no Cookie, no Origin) passes the origin check", async () => {
    const { res: up } = await rawSignUp();
    const signed = up.headers.get("set-auth-token");
    const auth = { authorization: `Bearer ${signed}` };
    const res = await raw("/update-user", { method: "POST", headers: auth, json: { name: "Via Bearer" } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { status: true });
    // update-user re-issues the session cookie (same token), hence set-auth-token again.
    assert.equal(res.headers.get("set-auth-token"), signed);
    assert.equal(decodeURIComponent(res.cookies.find((c) => c.name === SESSION_COOKIE)?.value ?? ""), signed);
    const s = await raw("/get-session", { headers: auth });
    assert.equal(s.json.user.name, "Via Bearer");
  });
});

describe("origin checks", () => {
  test("a POST with a cookie and no Origin is 403 MISSING_OR_NULL_ORIGIN, and changes nothing", async () => {
    const { header } = await rawSignUp();
    const res = await raw("/update-user", { method: "POST", headers: { cookie: header }, json: { name: "Csrf" } });
    assertEnvelope(res, 403, "MISSING_OR_NULL_ORIGIN");
    const out = await raw("/sign-out", { method: "POST", headers: { cookie: header }, json: {} });
    assertEnvelope(out, 403, "MISSING_OR_NULL_ORIGIN");
    const nul = await raw("/update-user", { method: "POST", headers: { cookie: header, origin: "null" }, json: { name: "Csrf" } });
    assertEnvelope(nul, 403, "MISSING_OR_NULL_ORIGIN");
    const s = await raw("/get-session", { headers: { cookie: header } });
    assert.equal(s.json.user.name, "Wire", "the refused update changed nothing");
    assert.ok(s.json.session, "the refused sign-out ended nothing");
  });

  test("an untrusted Origin is 403 INVALID_ORIGIN, and changes nothing", async () => {
    const { header } = await rawSignUp();
    const res = await raw("/update-user", { method: "POST", headers: { cookie: header, origin: EVIL }, json: { name: "Csrf" } });
    assertEnvelope(res, 403, "INVALID_ORIGIN");
    const rev = await raw("/revoke-sessions", { method: "POST", headers: { cookie: header, origin: EVIL }, json: {} });
    assertEnvelope(rev, 403, "INVALID_ORIGIN");
    const s = await raw("/get-session", { headers: { cookie: header } });
    assert.equal(s.json.user.name, "Wire");
  });

  test("a trusted Referer stands in for Origin", async () => {
    const { header } = await rawSignUp();
    const res = await raw("/update-user", {
      method: "POST", headers: { cookie: header, referer: `${ORIGIN}/some/page` }, json: { name: "Referred" },
    });
    assert.equal(res.status, 200, res.text);
  });

  test("sign-in from Node's fetch (Sec-Fetch-Mode: cors) needs a trusted Origin", async () => {
    const { email } = await rawSignUp();
    const none = await raw("/sign-in/email", { method: "POST", json: { email, password: PASSWORD } });
    assertEnvelope(none, 403, "MISSING_OR_NULL_ORIGIN");
    const evil = await raw("/sign-in/email", { method: "POST", headers: { origin: EVIL }, json: { email, password: PASSWORD } });
    assertEnvelope(evil, 403, "INVALID_ORIGIN");
    // node:http, not fetch: fetch sets Sec-Fetch-Mode: cors itself.
    const nav = await rawHttp("/sign-in/email", {
      method: "POST",
      headers: { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document" },
      json: { email, password: PASSWORD },
    });
    assertEnvelope(nav, 403, "CROSS_SITE_NAVIGATION_LOGIN_BLOCKED");
    for (const res of [none, evil, nav]) assert.equal(res.cookies.length, 0, "no cookie on a refused sign-in");
  });

  test("an untrusted callbackURL is 403 INVALID_CALLBACK_URL; a relative one is fine", async () => {
    const { email } = await rawSignUp();
    const bad = await raw("/sign-in/email", {
      method: "POST", headers: { origin: ORIGIN }, json: { email, password: PASSWORD, callbackURL: "https://evil.test/" },
    });
    assertEnvelope(bad, 403, "INVALID_CALLBACK_URL");
    const good = await raw("/sign-in/email", {
      method: "POST", headers: { origin: ORIGIN }, json: { email, password: PASSWORD, callbackURL: "/dashboard" },
    });
    assert.equal(good.status, 200, good.text);
    assert.equal(good.json.redirect, true);
    assert.equal(good.json.url, "/dashboard");
  });
});

describe("routing and errors", () => {
  test("an unknown path, a trailing slash and a wrong method are 404 with an empty body", async () => {
    for (const [method, path] of [["GET", "/nope"], ["POST", "/nope"], ["GET", "/ok/"], ["PUT", "/get-session"], ["GET", "/sign-in/email"]]) {
      const res = await raw(path, { method, headers: { origin: ORIGIN } });
      assert.equal(res.status, 404, `${method} ${path}: ${res.status} ${res.text}`);
      assert.equal(res.text, "", `${method} ${path}: empty body`);
    }
  });

  test("GET /ok is {ok: true}", async () => {
    const res = await raw("/ok");
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { ok: true });
  });

  test("errors are {message, code} JSON: 401, 415, 400 bad JSON, 405 POST get-session", async () => {
    assertEnvelope(await raw("/list-sessions"), 401, "UNAUTHORIZED");
    assertEnvelope(await raw("/token"), 401, "UNAUTHORIZED");
    assertEnvelope(await raw("/sign-up/email", {
      method: "POST", headers: { origin: ORIGIN, "content-type": "text/plain" },
      body: JSON.stringify({ email: newEmail(), password: PASSWORD, name: "X" }),
    }), 415, "UNSUPPORTED_MEDIA_TYPE");
    assertEnvelope(await raw("/sign-in/email", {
      method: "POST", headers: { origin: ORIGIN, "content-type": "application/json" }, body: "{not json",
    }), 400, "BAD_REQUEST");
    assertEnvelope(await raw("/sign-in/email", {
      method: "POST", headers: { origin: ORIGIN }, json: { email: "bad", password: "x" },
    }), 400, "INVALID_EMAIL");
    assertEnvelope(await raw("/get-session", { method: "POST", headers: { origin: ORIGIN }, json: {} }), 405,
      "METHOD_NOT_ALLOWED_DEFER_SESSION_REQUIRED");
  });

  test("update-user with nothing to update is 400 \"No fields to update\"", async () => {
    const { header } = await rawSignUp();
    const res = await raw("/update-user", { method: "POST", headers: { cookie: header, origin: ORIGIN }, json: {} });
    assert.equal(res.status, 400, res.text);
    assert.equal(res.json?.message, "No fields to update");
  });

  test("verify-email with a bad token: 401 INVALID_TOKEN, or a redirect to callbackURL?error=INVALID_TOKEN", async () => {
    assertEnvelope(await raw("/verify-email?token=bogus"), 401, "INVALID_TOKEN");
    const res = await raw("/verify-email?token=bogus&callbackURL=%2Fcb");
    assert.equal(res.status, 302, res.text);
    assert.equal(new URL(res.headers.get("location"), ORIGIN).href, `${ORIGIN}/cb?error=INVALID_TOKEN`);
  });

  test("GET /error is an HTML page", async () => {
    const res = await raw("/error?error=SOME_CODE");
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  });

  test("GET /jwks and the /token JWT agree", async () => {
    const { header } = await rawSignUp();
    const t = await raw("/token", { headers: { cookie: header } });
    assert.equal(t.status, 200, t.text);
    const jwks = await raw("/jwks");
    assert.equal(jwks.status, 200);
    const { header: jh } = decodeJwt(t.json.token);
    assert.ok(jwks.json.keys.some((k) => k.kid === jh.kid), "the token's kid is in the JWKS");
  });
});
