// Shared by client.test.mjs and wire.test.mjs: where the server is, which server it is, the
// unmodified better-auth client in cookie mode (a cookie jar around fetch + an Origin header)
// and in bearer mode (set-auth-token kept from onSuccess, sent back as Authorization: Bearer),
// raw fetch, the mailbox and JWT checks.
import assert from "node:assert/strict";
import { createHmac, createPublicKey, verify as verifySignature, randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { createAuthClient } from "better-auth/client";
import { jwtClient } from "better-auth/client/plugins";

/** Server origin; the client appends /api/auth. */
export const BASE = (process.env.AUTH_BASE ?? "http://127.0.0.1:3999").replace(/\/+$/, "");
export const ORIGIN = new URL(BASE).origin;
export const API = `${BASE}/api/auth`;
/** An origin no server under test trusts. */
export const EVIL = "http://evil.test";

/**
 * Which server answers: the two differ where servauth is stricter by design (documented in
 * its README), and each side's behaviour is asserted explicitly. Anything else is an error:
 * no test is skipped because the kind is unknown.
 */
export const KIND = process.env.SERVER_KIND;
if (KIND !== "servauth" && KIND !== "better-auth") {
  throw new Error(`SERVER_KIND must be "servauth" or "better-auth", not ${JSON.stringify(KIND)}`);
}
export const SERVAUTH = KIND === "servauth";

/** The cookie-signing secret the server was started with (the reference server's default). */
export const DEFAULT_SECRET = "servauth-better-auth-tests-fixed-secret-0123456789";
export const SECRET = process.env.BETTER_AUTH_SECRET ?? DEFAULT_SECRET;

/** Where the server's outgoing mail can be read (see mailbox.mjs / reference-server.mjs). */
export const MAILBOX = process.env.MAILBOX_URL ?? (SERVAUTH ? undefined : `${BASE}/__test/mail`);

/** Satisfy both password policies: Better Auth (8-128) and servauth (>= 15, not common). */
export const PASSWORD = "correct horse battery staple 1";
export const PASSWORD_2 = "correct horse battery staple 2";
export const PASSWORD_3 = "correct horse battery staple 3";

export const SESSION_COOKIE = "better-auth.session_token";
export const DONT_REMEMBER_COOKIE = "better-auth.dont_remember";

const run = randomBytes(4).toString("hex");
let counter = 0;
/** A fresh address per call (mixed case: servers lower-case it). */
export function newEmail(tag = "user") {
  counter += 1;
  return `${tag}.${run}.${counter}@Example.com`;
}

/** Parses one Set-Cookie line: {name, value, attrs: {lower-cased name: value|true}, line}. */
export function parseSetCookie(line) {
  const [pair, ...rest] = line.split(";");
  const eq = pair.indexOf("=");
  const attrs = {};
  for (const a of rest) {
    const i = a.indexOf("=");
    const key = (i < 0 ? a : a.slice(0, i)).trim().toLowerCase();
    if (key) attrs[key] = i < 0 ? true : a.slice(i + 1).trim();
  }
  return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attrs, line };
}

/**
 * fetch with a cookie jar, as customFetchImpl for the client (Node's fetch keeps no cookies).
 * Values are stored and replayed verbatim (they are already URL-encoded); an empty value or
 * Max-Age=0 deletes. `jar.last` holds the Set-Cookie lines of the latest response.
 */
export function cookieJar() {
  const cookies = new Map();
  const jar = {
    cookies,
    last: [],
    header() {
      return [...cookies].map(([k, v]) => `${k}=${v}`).join("; ");
    },
    fetch: async (url, init = {}) => {
      const headers = new Headers(init.headers);
      if (cookies.size) headers.set("cookie", jar.header());
      const res = await fetch(url, { ...init, headers });
      jar.last = res.headers.getSetCookie().map(parseSetCookie);
      for (const c of jar.last) {
        if (!c.value || c.attrs["max-age"] === "0") cookies.delete(c.name);
        else cookies.set(c.name, c.value);
      }
      return res;
    },
  };
  return jar;
}

/** The unmodified client with a cookie jar and a trusted Origin on every request. */
export function cookieClient() {
  const jar = cookieJar();
  const client = createAuthClient({
    baseURL: BASE,
    plugins: [jwtClient()],
    fetchOptions: { customFetchImpl: jar.fetch, headers: { origin: ORIGIN } },
  });
  return { client, jar };
}

/**
 * The unmodified client in bearer mode: no cookie jar; the signed token of set-auth-token is
 * kept from onSuccess and sent as Authorization: Bearer. The Origin header stays because
 * Node's fetch sends Sec-Fetch-Mode, which makes sign-in/sign-up demand a trusted Origin.
 */
export function bearerClient() {
  const state = { token: "", headers: [] };
  const client = createAuthClient({
    baseURL: BASE,
    plugins: [jwtClient()],
    fetchOptions: {
      headers: { origin: ORIGIN },
      auth: { type: "Bearer", token: () => state.token },
      onSuccess: (ctx) => {
        const t = ctx.response.headers.get("set-auth-token");
        if (t) state.token = t;
      },
    },
  });
  return { client, state };
}

/** Raw fetch under /api/auth: {status, headers, text, json, cookies (parsed Set-Cookie)}. */
export async function raw(path, { method = "GET", headers = {}, body, json } = {}) {
  const h = new Headers(headers);
  let payload = body;
  if (json !== undefined) {
    payload = JSON.stringify(json);
    if (!h.has("content-type")) h.set("content-type", "application/json");
  }
  const res = await fetch(`${API}${path}`, { method, headers: h, body: payload, redirect: "manual" });
  const text = await res.text();
  let parsed;
  try {
    parsed = text === "" ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return {
    status: res.status,
    headers: res.headers,
    text,
    json: parsed,
    cookies: res.headers.getSetCookie().map(parseSetCookie),
  };
}

/** Like raw(), over node:http: exactly the headers given (fetch adds Sec-Fetch-Mode etc.). */
export function rawHttp(path, { method = "GET", headers = {}, body, json } = {}) {
  const h = { ...headers };
  let payload = body;
  if (json !== undefined) {
    payload = JSON.stringify(json);
    h["content-type"] ??= "application/json";
  }
  if (payload !== undefined) h["content-length"] = Buffer.byteLength(payload);
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${API}${path}`, { method, headers: h }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let parsed;
        try {
          parsed = text === "" ? undefined : JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        const setCookie = res.headers["set-cookie"] ?? [];
        resolve({
          status: res.statusCode,
          headers: new Headers(Object.entries(res.headers).flatMap(([k, v]) =>
            (Array.isArray(v) ? v : [v]).map((x) => [k, String(x)]))),
          text,
          json: parsed,
          cookies: setCookie.map(parseSetCookie),
        });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Signs up through the client and asserts success; returns {email, user, token}. */
export async function signUp(client, { email = newEmail(), password = PASSWORD, name = "Test User" } = {}) {
  const { data, error } = await client.signUp.email({ email, password, name });
  assert.equal(error, null, `sign-up failed: ${JSON.stringify(error)}`);
  assert.equal(typeof data.token, "string");
  return { email: email.toLowerCase(), user: data.user, token: data.token };
}

/** Signs in through the client and asserts success. */
export async function signIn(client, email, password = PASSWORD, extra = {}) {
  const { data, error } = await client.signIn.email({ email, password, ...extra });
  assert.equal(error, null, `sign-in failed: ${JSON.stringify(error)}`);
  assert.equal(typeof data.token, "string");
  return data;
}

/** Asserts the client's answer is an error with this status and (if given) code. */
export function assertError(result, status, code) {
  assert.equal(result.data, null, `expected an error, got data ${JSON.stringify(result.data)}`);
  assert.ok(result.error, "expected an error");
  assert.equal(result.error.status, status, `status of ${JSON.stringify(result.error)}`);
  if (code !== undefined) assert.equal(result.error.code, code, `code of ${JSON.stringify(result.error)}`);
}

/** Asserts the client currently has no session (get-session answers 200 null). */
export async function assertSignedOut(client, why = "") {
  const s = await client.getSession();
  assert.equal(s.error, null, `get-session errored ${why}: ${JSON.stringify(s.error)}`);
  assert.equal(s.data, null, `expected no session ${why}`);
}

/** The standard, padded base64 HMAC-SHA256 that Better Auth signs cookie values with. */
export function sign(value, secret = SECRET) {
  return createHmac("sha256", Buffer.from(secret, "utf8")).update(value, "utf8").digest("base64");
}

/** Asserts d is a valid Date close to `near` (ms) within `slack` (ms). */
export function assertDate(d, label, near, slack) {
  assert.ok(d instanceof Date, `${label} must be revived as a Date (ISO-8601, <= 7 fraction digits), got ${JSON.stringify(d)}`);
  assert.ok(!Number.isNaN(d.getTime()), `${label} is an invalid Date`);
  if (near !== undefined) {
    assert.ok(Math.abs(d.getTime() - near) <= slack,
      `${label} ${d.toISOString()} is not within ${slack} ms of ${new Date(near).toISOString()}`);
  }
}

export const SECOND = 1000;
export const HOUR = 3600 * SECOND;
export const DAY = 24 * HOUR;

function b64urlJson(part) {
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
}

/** Decodes a compact JWS: {header, payload, signingInput, signature}. */
export function decodeJwt(token) {
  assert.match(token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, `not a compact JWS: ${token}`);
  const [h, p, s] = token.split(".");
  return { header: b64urlJson(h), payload: b64urlJson(p), signingInput: `${h}.${p}`, signature: Buffer.from(s, "base64url") };
}

/** Verifies a JWT against a JWK set (the key named by its kid); returns the payload. */
export function verifyJwt(token, keys) {
  const { header, payload, signingInput, signature } = decodeJwt(token);
  const jwk = keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, `no key with kid ${header.kid} in the JWKS (${keys.map((k) => k.kid).join(", ")})`);
  const key = createPublicKey({ key: jwk, format: "jwk" });
  const data = Buffer.from(signingInput);
  let ok;
  switch (header.alg) {
    case "EdDSA":
      ok = verifySignature(null, data, key, signature);
      break;
    case "RS256":
      ok = verifySignature("sha256", data, key, signature);
      break;
    case "PS256":
      ok = verifySignature("sha256", data, { key, padding: 6, saltLength: 32 }, signature);
      break;
    case "ES256":
      ok = verifySignature("sha256", data, { key, dsaEncoding: "ieee-p1363" }, signature);
      break;
    case "ES512":
      ok = verifySignature("sha512", data, { key, dsaEncoding: "ieee-p1363" }, signature);
      break;
    default:
      assert.fail(`unexpected JWT alg ${header.alg}`);
  }
  assert.ok(ok, `the JWT's ${header.alg} signature does not verify with key ${header.kid}`);
  return payload;
}

function decodeQuotedPrintable(s) {
  const bytes = Buffer.from(s.replace(/=\r?\n/g, ""), "latin1");
  const out = [];
  for (let i = 0; i < bytes.length; i += 1) {
    if (bytes[i] === 0x3d && /^[0-9A-Fa-f]{2}$/.test(bytes.subarray(i + 1, i + 3).toString("latin1"))) {
      out.push(parseInt(bytes.subarray(i + 1, i + 3).toString("latin1"), 16));
      i += 2;
    } else out.push(bytes[i]);
  }
  return Buffer.from(out).toString("utf8");
}

/** The decoded text of a MIME message (every text part, transfer encodings undone). */
export function mimeText(message) {
  const split = message.search(/\r?\n\r?\n/);
  const head = split < 0 ? message : message.slice(0, split);
  const body = split < 0 ? "" : message.slice(split).replace(/^\r?\n\r?\n/, "");
  const unfolded = head.replace(/\r?\n[ \t]+/g, " ");
  const header = (name) => (unfolded.match(new RegExp(`^${name}:\\s*(.*)$`, "im")) ?? [])[1] ?? "";
  const type = header("content-type");
  const boundary = type.match(/boundary="?([^";]+)"?/i)?.[1];
  if (/^multipart\//i.test(type) && boundary) {
    return body.split(`--${boundary}`).slice(1)
      .filter((part) => !part.startsWith("--"))
      .map((part) => mimeText(part.replace(/^\r?\n/, "")))
      .join("\n");
  }
  const encoding = header("content-transfer-encoding").trim().toLowerCase();
  if (encoding === "base64") return Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8");
  if (encoding === "quoted-printable") return decodeQuotedPrintable(body);
  return body;
}

/** All mail sent so far: [{to: [addresses], text}]. */
export async function mails() {
  assert.ok(MAILBOX, "MAILBOX_URL must be set for servauth (run.sh starts mailbox.mjs as its SMTP server)");
  const res = await fetch(MAILBOX);
  assert.equal(res.status, 200, `mailbox ${MAILBOX} answered ${res.status}`);
  return (await res.json()).map((m) => ({ to: m.to.map((a) => a.toLowerCase()), text: m.text ?? mimeText(m.raw) }));
}

/** Waits for a mail to `to` (after `skip` earlier ones to that address) and returns its text. */
export async function waitForMail(to, { skip = 0, seconds = 15 } = {}) {
  const deadline = Date.now() + seconds * SECOND;
  for (;;) {
    const mine = (await mails()).filter((m) => m.to.includes(to.toLowerCase()));
    if (mine.length > skip) return mine[skip].text;
    if (Date.now() > deadline) assert.fail(`no mail to ${to} within ${seconds} s (${mine.length} seen, waited for #${skip + 1})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** How many mails went to `to` so far. */
export async function mailCount(to) {
  return (await mails()).filter((m) => m.to.includes(to.toLowerCase())).length;
}

/** The token of the first link in a mail: `?token=…` / `&token=…`, else `/reset-password/<token>`. */
export function linkToken(text) {
  const q = text.match(/[?&]token=([^&\s"'<>]+)/);
  if (q) return decodeURIComponent(q[1]);
  const p = text.match(/\/reset-password\/([A-Za-z0-9_-]+)/);
  assert.ok(p, `no token link in mail:\n${text}`);
  return p[1];
}
