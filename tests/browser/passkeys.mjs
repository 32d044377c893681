// Real-browser passkey test: headless Chromium with a CDP virtual authenticator (CTAP2,
// resident keys, user verification) runs the WebAuthn ceremonies from a page on a second
// origin against a real servauth. It proves that a passkey registers from an allowed
// origin; signs in on its own (discoverable, no email) and as the second factor of a
// password sign-in, with the right `amr`; that a page whose origin may call the API (CORS)
// but is not a WebAuthn origin can neither register nor sign in; that a ceremony token and
// an mfa_token are single use; that malformed credentials are refused (400, never 500); and
// that a cloned authenticator (its signature counter went backwards) is refused.
//
// Usage: node passkeys.mjs [path/to/servauth] [sqlite|postgres]   (SERVAUTH_LOG=info shows
//   why each passkey was refused)
//   (defaults: ../../target/debug/servauth, sqlite). `postgres` creates a fresh database on
//   postgres://postgres@127.0.0.1:5432 (PG_URL overrides the server; psql must be on PATH)
//   and drops it at the end.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.argv[2] ?? join(here, '..', '..', 'target', 'debug', 'servauth');
const backend = process.argv[3] ?? 'sqlite';
if (!['sqlite', 'postgres'].includes(backend)) {
  console.error(`unknown backend ${backend}: sqlite or postgres`);
  process.exit(2);
}
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const pgServer = process.env.PG_URL ?? 'postgres://postgres@127.0.0.1:5432';
const page = readFileSync(join(here, 'passkeys.html'));
const password = 'correct horse battery staple 42';
const runId = randomBytes(4).toString('hex');

function freePort() {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function servePage(port) {
  const server = createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(page);
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

async function waitFor(url, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch { /* not up yet */ }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${url} did not answer within ${seconds}s`);
}

function psql(sql) {
  const result = spawnSync('psql', [`${pgServer}/postgres`, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql],
    { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`psql ${sql}: ${result.stderr || result.error}`);
}

const [apiPort, allowedPort, deniedPort] = [await freePort(), await freePort(), await freePort()];
const api = `http://localhost:${apiPort}`;
const allowed = `http://localhost:${allowedPort}`;
const denied = `http://localhost:${deniedPort}`;
const dataDir = mkdtempSync(join(tmpdir(), 'servauth-passkeys-'));
const database = `passkeys_${runId}`;
let databaseUrl = `sqlite://${join(dataDir, 'passkeys.db')}`;
if (backend === 'postgres') {
  psql(`CREATE DATABASE ${database}`);
  databaseUrl = `${pgServer}/${database}`;
}

const server = spawn(binary, ['serve'], {
  env: {
    PATH: process.env.PATH,
    DATABASE_URL: databaseUrl,
    SERVAUTH_LISTEN: `127.0.0.1:${apiPort}`,
    SERVAUTH_PUBLIC_URL: api,
    // Both pages may call the API; only the allowed one may use passkeys.
    SERVAUTH_CORS_ORIGINS: `${allowed},${denied}`,
    SERVAUTH_WEBAUTHN_RP_ID: 'localhost',
    SERVAUTH_WEBAUTHN_ORIGINS: allowed,
    SERVAUTH_ARGON2_MEMORY_KIB: '1024',
    SERVAUTH_ARGON2_ITERATIONS: '1',
    SERVAUTH_LOG: process.env.SERVAUTH_LOG ?? 'warn',
  },
  stdio: ['ignore', 'inherit', 'inherit'],
});
const exited = new Promise((resolve) => server.on('exit', resolve));
const pages = [await servePage(allowedPort), await servePage(deniedPort)];
const contexts = [];
let browser;
let passed = 0;
let failed = 0;

async function check(name, body) {
  try {
    await body();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`not ok - ${name}\n${error.stack}`);
  }
}

// A call from node, for what carries no WebAuthn data.
async function call(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(api + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

// A refusal: the status, the problem document's code, and its media type.
function assertProblem(reply, status, code) {
  assert.equal(reply.status, status, `expected ${status} ${code}, got ${JSON.stringify(reply)}`);
  assert.equal(reply.body?.code, code, JSON.stringify(reply.body));
  if (reply.contentType !== undefined) assert.match(reply.contentType, /^application\/problem\+json/);
}

async function register(email) {
  const reply = await call('POST', '/auth/register', { body: { email, password, client: 'native' } });
  assert.equal(reply.status, 201, JSON.stringify(reply.body));
  return reply.body;
}

async function passkeyClones() {
  const text = await (await fetch(`${api}/metrics`)).text();
  return text.split('\n')
    .map((line) => line.match(/^servauth_passkey_clones_total(?:\{[^}]*\})? (\d+(?:\.\d+)?)/))
    .filter(Boolean)
    .reduce((sum, match) => sum + Number(match[1]), 0);
}

// A tab on `origin` with its own virtual authenticator, holding `credentials` (as
// WebAuthn.getCredentials gives them).
async function openTab(origin, credentials = []) {
  const context = await browser.newContext();
  contexts.push(context);
  const tab = await context.newPage();
  const cdp = await context.newCDPSession(tab);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  for (const credential of credentials) {
    await cdp.send('WebAuthn.addCredential', { authenticatorId, credential });
  }
  await tab.goto(`${origin}/?api=${encodeURIComponent(api)}`);
  const held = async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials;
  // Puts `credential` back into the authenticator in place of its current copy.
  const replace = async (credential) => {
    await cdp.send('WebAuthn.removeCredential', { authenticatorId, credentialId: credential.credentialId });
    await cdp.send('WebAuthn.addCredential', { authenticatorId, credential });
  };
  return { context, tab, cdp, authenticatorId, held, replace };
}

const inPage = (tab, fn, arg) => tab.evaluate(fn, arg);

try {
  await waitFor(`${api}/health`);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });

  const email = `ada-${runId}@example.com`;
  const account = await register(email);
  const userId = account.user.id;
  const userToken = account.access_token;
  const main = await openTab(allowed);
  let passkeyId;
  let passkeyAmr; // hwk or swk, as the first sign-in said
  // A session signed in with the passkey: with a factor enrolled, adding another needs a
  // recent sign-in that used one (the registration's ["pwd"] session no longer does).
  let strongToken;

  await check('a passkey registers from an allowed origin and counts as a second factor', async () => {
    const reply = await inPage(main.tab, (token) => window.passkeys.register(token, 'Laptop'), userToken);
    assert.equal(reply.status, 201, JSON.stringify(reply));
    assert.equal(reply.body.name, 'Laptop');
    assert.equal(reply.body.last_used_at, null);
    assert.equal(typeof reply.body.backup_eligible, 'boolean');
    passkeyId = reply.body.id;
    assert.equal((await main.held()).length, 1, 'the authenticator holds one resident credential');

    const list = await call('GET', '/auth/passkeys', { token: userToken });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.map((p) => [p.id, p.name]), [[passkeyId, 'Laptop']]);

    const me = await call('GET', '/auth/me', { token: userToken });
    assert.equal(me.status, 200);
    assert.equal(me.body.mfa.passkeys, 1);
    assert.ok(me.body.mfa.second_factors.includes('webauthn'), JSON.stringify(me.body.mfa));
  });

  await check('a passkey signs in on its own (discoverable: no email typed)', async () => {
    const before = Math.floor(Date.now() / 1000);
    const reply = await inPage(main.tab, () => window.passkeys.signIn());
    assert.equal(reply.status, 200, JSON.stringify(reply));
    assert.deepEqual(reply.publicKey.allowCredentials ?? [], [], 'no credential list: discoverable');
    assert.equal(reply.body.user.id, userId);
    assert.ok(reply.body.refresh_token, 'a native client gets its refresh token');
    const token = claims(reply.body.access_token);
    assert.equal(token.sub, userId);
    assert.equal(token.amr.length, 2, JSON.stringify(token.amr));
    assert.ok(['hwk', 'swk'].includes(token.amr[0]), JSON.stringify(token.amr));
    assert.equal(token.amr[1], 'mfa');
    passkeyAmr = token.amr[0];
    strongToken = reply.body.access_token;
    assert.ok(token.auth_time >= before - 5 && token.auth_time <= Date.now() / 1000 + 5,
      `auth_time ${token.auth_time} is this sign-in`);

    const me = await call('GET', '/auth/me', { token: reply.body.access_token });
    assert.equal(me.status, 200);
    assert.equal(me.body.id, userId);
    const [passkey] = (await call('GET', '/auth/passkeys', { token: userToken })).body;
    assert.ok(passkey.last_used_at, 'the sign-in marks the passkey used');
  });

  await check('a passkey is the second factor of a password sign-in; its mfa_token is single use', async () => {
    const login = await call('POST', '/auth/login', { body: { email, password, client: 'native' } });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    assert.equal(login.body.mfa_required, true);
    assert.ok(login.body.factors.includes('webauthn'), JSON.stringify(login.body.factors));
    assert.equal(login.body.access_token, undefined, 'no session before the second factor');
    assert.ok(login.body.mfa_token);

    const reply = await inPage(main.tab, (t) => window.passkeys.secondFactor(t), login.body.mfa_token);
    assert.equal(reply.status, 200, JSON.stringify(reply));
    const token = claims(reply.body.access_token);
    assert.equal(token.sub, userId);
    assert.ok(['hwk', 'swk'].includes(token.amr[1]), JSON.stringify(token.amr));
    assert.deepEqual(token.amr, ['pwd', passkeyAmr ?? token.amr[1], 'mfa']);
    assert.equal((await call('GET', '/auth/me', { token: reply.body.access_token })).status, 200);

    const replay = await inPage(main.tab, (body) => window.passkeys.call('POST', '/auth/mfa/verify', { body }),
      reply.sent);
    assertProblem(replay, 401, 'invalid_mfa_token');
  });

  await check('a CORS-allowed origin that is not a WebAuthn origin can neither register nor sign in', async () => {
    const before = (await call('GET', '/auth/passkeys', { token: userToken })).body.map((p) => p.id);
    const wrong = await openTab(denied);
    assert.ok(strongToken, 'needs the passkey sign-in above');
    const registration = await inPage(wrong.tab, (token) => window.passkeys.register(token, 'Elsewhere'),
      strongToken);
    assertProblem(registration, 400, 'webauthn_failed');
    const after = (await call('GET', '/auth/passkeys', { token: userToken })).body.map((p) => p.id);
    assert.deepEqual(after, before, 'no passkey added');

    // The real passkey, copied into this tab's authenticator: signed for the wrong origin.
    await wrong.cdp.send('WebAuthn.clearCredentials', { authenticatorId: wrong.authenticatorId });
    for (const credential of await main.held()) {
      await wrong.cdp.send('WebAuthn.addCredential', { authenticatorId: wrong.authenticatorId, credential });
    }
    const signIn = await inPage(wrong.tab, () => window.passkeys.signIn());
    assertProblem(signIn, 400, 'webauthn_failed');
    await wrong.context.close();
  });

  await check('a passkey sign-in ceremony token is single use', async () => {
    const first = await inPage(main.tab, () => window.passkeys.signIn());
    assert.equal(first.status, 200, JSON.stringify(first));
    const again = await inPage(main.tab, (sent) => window.passkeys.call('POST', '/auth/passkeys/login',
      { body: { ...sent, client: 'native' } }), first.sent);
    assertProblem(again, 400, 'invalid_ceremony');
  });

  // Before the clone check, so that these fail only for being malformed.
  await check('malformed credentials are refused with 400 webauthn_failed, never a 500', async () => {
    const refusals = await inPage(main.tab, async (token) => {
      const { call, get } = window.passkeys;
      const loginWith = async (mangle) => {
        const start = await call('POST', '/auth/passkeys/login/options');
        const credential = await mangle(start.body.options.publicKey);
        return call('POST', '/auth/passkeys/login',
          { body: { ceremony_token: start.body.ceremony_token, credential, client: 'native' } });
      };
      const out = {};
      out['login: {}'] = await loginWith(async () => ({}));
      out['login: wrong types'] = await loginWith(async () => ({ id: 7, rawId: [], type: 'x', response: 'y' }));
      out['login: truncated clientDataJSON'] = await loginWith(async (publicKey) => {
        const assertion = await get(publicKey);
        const data = assertion.response.clientDataJSON;
        assertion.response.clientDataJSON = data.slice(0, Math.floor(data.length / 2));
        return assertion;
      });
      out['login: clientDataJSON not base64url'] = await loginWith(async (publicKey) => {
        const assertion = await get(publicKey);
        assertion.response.clientDataJSON = '%%%not base64%%%';
        return assertion;
      });
      const start = await call('POST', '/auth/passkeys/registration/options', { token });
      if (start.status === 200) {
        out['registration: {}'] = await call('POST', '/auth/passkeys/registration',
          { token, body: { ceremony_token: start.body.ceremony_token, credential: {} } });
      } else {
        out['registration options'] = start;
      }
      return out;
    }, strongToken);

    const login = await call('POST', '/auth/login', { body: { email, password, client: 'native' } });
    assert.equal(login.body.mfa_required, true, JSON.stringify(login.body));
    refusals['mfa verify: {}'] = await inPage(main.tab, async (mfa_token) => {
      const { call } = window.passkeys;
      await call('POST', '/auth/mfa/webauthn/options', { body: { mfa_token } });
      return call('POST', '/auth/mfa/verify', { body: { mfa_token, webauthn: {} } });
    }, login.body.mfa_token);

    for (const [what, reply] of Object.entries(refusals)) {
      assert.ok(reply.status < 500, `${what}: ${JSON.stringify(reply)}`);
      assertProblem(reply, 400, 'webauthn_failed');
    }
  });

  await check('a cloned authenticator (its signature counter went backwards) is refused', async () => {
    let [credential] = await main.held();
    if (credential.signCount === 0) {
      // An authenticator that never counts cannot be caught; start it counting from 10.
      await main.replace({ ...credential, signCount: 10 });
    }
    // A sign-in now, so the server holds the authenticator's latest count.
    const synced = await inPage(main.tab, () => window.passkeys.signIn());
    assert.equal(synced.status, 200, JSON.stringify(synced));
    [credential] = await main.held();
    const current = credential.signCount;
    assert.ok(current >= 1, `the authenticator counts (signCount ${current})`);
    const lower = current >= 10 ? 5 : 0;
    console.log(`# signCount ${current}; the clone restarts at ${lower}`);

    const clonesBefore = await passkeyClones();
    await main.replace({ ...credential, signCount: lower });
    const cloned = await inPage(main.tab, () => window.passkeys.signIn());
    assertProblem(cloned, 400, 'webauthn_failed');
    assert.equal(await passkeyClones(), clonesBefore + 1, 'servauth_passkey_clones_total counts it');
  });
} finally {
  for (const context of contexts) await context.close().catch(() => {});
  await browser?.close();
  pages.forEach((p) => p.close());
  server.kill('SIGTERM');
  await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
  if (backend === 'postgres') {
    try {
      psql(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    } catch (error) {
      console.log(`# ${error.message}`);
    }
  }
  rmSync(dataDir, { recursive: true, force: true });
}

console.log(`${passed} passed, ${failed} failed (${backend})`);
process.exit(failed === 0 ? 0 : 1);
