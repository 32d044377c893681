// Real-browser passkey test: headless Chromium with a CDP virtual authenticator (CTAP2,
// resident keys, user verification) runs the WebAuthn ceremonies from a page on a second
// origin against a real servauth. It proves that a passkey registers from an allowed
// origin; signs in on its own (discoverable, no email) and as the second factor of a
// password sign-in, with the right `amr`; that a page whose origin may call the API (CORS)
// but is not a WebAuthn origin can neither register nor sign in; that a ceremony token and
// an mfa_token are single use; that an answer to one ceremony is refused with another's
// token; that malformed credentials and hostile attestations are refused (400, never 500);
// that a cloned authenticator (its signature counter went backwards) is refused; that a
// passkey is renamed and deleted only by its owner, deleting only after a recent second
// factor; and that no token or WebAuthn value the test saw appears in the server's log.
//
// Usage: node passkeys.mjs [path/to/servauth] [sqlite|postgres]
//   (defaults: ../../target/debug/servauth, sqlite). The server logs at SERVAUTH_LOG (default
//   info; its log is searched for secrets at the end) into a pipe; its output is shown when a
//   check failed, or as it comes with VERBOSE=1. `postgres` creates a fresh database on
//   postgres://postgres@127.0.0.1:5432 (PG_URL overrides the server; psql must be on PATH)
//   and drops it at the end.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { freePort, servePage, waitFor } from './loopback.mjs';

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
const verbose = process.env.VERBOSE === '1';

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
    SERVAUTH_LOG: process.env.SERVAUTH_LOG ?? 'info',
  },
  stdio: ['ignore', 'pipe', 'pipe'],
});
// The server's output, kept (and shown only with VERBOSE=1 or when a check failed).
const serverOutput = { stdout: [], stderr: [] };
for (const name of ['stdout', 'stderr']) {
  server[name].on('data', (chunk) => {
    serverOutput[name].push(chunk);
    if (verbose) process[name].write(chunk);
  });
}
const serverLog = () => ['stdout', 'stderr']
  .map((name) => Buffer.concat(serverOutput[name]).toString('utf8')).join('\n');
// 'close': the process is gone and its pipes are drained.
const exited = new Promise((resolve) => server.on('close', resolve));
const pages = [await servePage(page, allowedPort), await servePage(page, deniedPort)];
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

// Every token and WebAuthn value the test sent or received, by value: none may appear in
// the server's log. (At least 16 characters: shorter ones are not secrets, and would match
// by chance.)
const secretFields = new Set(['access_token', 'refresh_token', 'ceremony_token', 'mfa_token',
  'clientDataJSON', 'signature', 'attestationObject']);
const secrets = new Map(); // value -> field
function collect(value) {
  if (Array.isArray(value)) {
    value.forEach(collect);
  } else if (value && typeof value === 'object') {
    for (const [field, inner] of Object.entries(value)) {
      if (secretFields.has(field) && typeof inner === 'string' && inner.length >= 16) {
        secrets.set(inner, field);
      } else {
        collect(inner);
      }
    }
  }
}

// A call from node, for what carries no WebAuthn data.
async function call(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  collect(body);
  const response = await fetch(api + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const reply = {
    status: response.status, contentType: response.headers.get('content-type') ?? undefined,
    body: text ? JSON.parse(text) : null,
  };
  collect(reply.body);
  return reply;
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

// Runs `fn(arg)` in the tab; what its calls sent and received is collected (secrets).
async function inPage(tab, fn, arg) {
  try {
    const result = await tab.evaluate(fn, arg);
    collect(result);
    return result;
  } finally {
    collect(await tab.evaluate(() => window.passkeys.seen()).catch(() => []));
  }
}

// A new account (registered with a password: amr ["pwd"]) and a tab with its own authenticator.
async function newUser(name) {
  const account = await register(`${name}-${runId}@example.com`);
  const tab = await openTab(allowed);
  const passkeys = async (token = account.access_token) => {
    const list = await call('GET', '/auth/passkeys', { token });
    assert.equal(list.status, 200, JSON.stringify(list));
    return list.body.map((p) => [p.id, p.name]);
  };
  return { account, id: account.user.id, token: account.access_token, ...tab, passkeys };
}

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

  // On an account of its own, so that the checks below keep the first passkey.
  await check('a passkey is renamed and deleted by its owner only; deleting needs a recent second factor', async () => {
    assert.ok(passkeyId && strongToken, 'needs the first passkey and its sign-in above');
    const bob = await newUser('bob');
    assert.deepEqual(claims(bob.token).amr, ['pwd']);
    const added = await inPage(bob.tab, (token) => window.passkeys.register(token, 'Laptop'), bob.token);
    assert.equal(added.status, 201, JSON.stringify(added));
    const id = added.body.id;
    const rename = (name, { token = bob.token, to = id } = {}) =>
      call('PATCH', `/auth/passkeys/${to}`, { token, body: { name } });

    const longest = 'x'.repeat(64);
    let reply = await rename(longest);
    assert.equal(reply.status, 200, JSON.stringify(reply));
    assert.equal(reply.body.name, longest, '64 characters are a name');
    reply = await rename('Phone');
    assert.equal(reply.status, 200, JSON.stringify(reply));
    assert.deepEqual([reply.body.id, reply.body.name], [id, 'Phone']);
    assert.deepEqual(await bob.passkeys(), [[id, 'Phone']]);
    for (const name of ['x'.repeat(65), '']) {
      reply = await rename(name);
      assertProblem(reply, 422, 'validation_failed');
      assert.ok(reply.body.errors?.some((e) => e.field === 'name'), JSON.stringify(reply.body));
    }
    assert.deepEqual(await bob.passkeys(), [[id, 'Phone']], 'a refused name changes nothing');

    // The registration's session (["pwd"]) may rename, not delete, now that a passkey is there.
    assertProblem(await call('DELETE', `/auth/passkeys/${id}`, { token: bob.token }),
      403, 'reauthentication_required');
    assert.deepEqual(await bob.passkeys(), [[id, 'Phone']]);
    const signIn = await inPage(bob.tab, () => window.passkeys.signIn());
    assert.equal(signIn.status, 200, JSON.stringify(signIn));
    assert.equal(signIn.body.user.id, bob.id);
    const bobStrong = signIn.body.access_token;
    assert.ok(claims(bobStrong).amr.includes('mfa'), JSON.stringify(claims(bobStrong).amr));

    // Someone else's passkey, or none: not found, with sessions that could delete their own.
    const notFound = [
      ['PATCH an unknown id', () => rename('Mine', { to: randomUUID() })],
      ['PATCH a malformed id', () => rename('Mine', { to: 'not-a-uuid' })],
      ['DELETE an unknown id', () => call('DELETE', `/auth/passkeys/${randomUUID()}`, { token: bobStrong })],
      ["PATCH another user's passkey", () => rename('Mine', { to: passkeyId, token: bobStrong })],
      ["DELETE another user's passkey",
        () => call('DELETE', `/auth/passkeys/${passkeyId}`, { token: bobStrong })],
      ["the other user's PATCH", () => rename('Theirs', { token: userToken })],
      ["the other user's DELETE", () => call('DELETE', `/auth/passkeys/${id}`, { token: strongToken })],
    ];
    for (const [what, request] of notFound) {
      const refused = await request();
      assert.equal(refused.status, 404, `${what}: ${JSON.stringify(refused)}`);
      assertProblem(refused, 404, 'not_found');
    }
    assert.deepEqual(await bob.passkeys(), [[id, 'Phone']], "bob's passkey as it was");
    const adas = (await call('GET', '/auth/passkeys', { token: userToken })).body.map((p) => [p.id, p.name]);
    assert.deepEqual(adas, [[passkeyId, 'Laptop']], "the other user's passkey as it was");

    reply = await call('DELETE', `/auth/passkeys/${id}`, { token: bobStrong });
    assert.equal(reply.status, 204, JSON.stringify(reply));
    assertProblem(await call('DELETE', `/auth/passkeys/${id}`, { token: bobStrong }), 404, 'not_found');
    assert.deepEqual(await bob.passkeys(), []);
    assert.equal((await call('GET', '/auth/me', { token: bob.token })).body.mfa.passkeys, 0);
    assert.equal((await bob.held()).length, 1, 'the authenticator still holds the credential');
    const after = await inPage(bob.tab, () => window.passkeys.signIn());
    assertProblem(after, 400, 'webauthn_failed');
    await bob.context.close();
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

  await check("an answer to one ceremony, posted with another ceremony's token, is refused", async () => {
    const carol = await newUser('carol');
    const registration = await inPage(carol.tab, async (token) => {
      const { call, create } = window.passkeys;
      const a = await call('POST', '/auth/passkeys/registration/options', { token });
      const b = await call('POST', '/auth/passkeys/registration/options', { token });
      if (a.status !== 200 || b.status !== 200) return { a, b };
      const credential = await create(a.body.options.publicKey);
      const crossed = await call('POST', '/auth/passkeys/registration',
        { token, body: { ceremony_token: b.body.ceremony_token, credential, name: 'Crossed' } });
      const listed = await call('GET', '/auth/passkeys', { token });
      // The same answer with its own ceremony: it was refused for the ceremony only.
      const own = await call('POST', '/auth/passkeys/registration',
        { token, body: { ceremony_token: a.body.ceremony_token, credential, name: 'Own' } });
      return { a, b, crossed, listed, own };
    }, carol.token);
    assert.equal(registration.a.status, 200, JSON.stringify(registration.a));
    assert.equal(registration.b.status, 200, JSON.stringify(registration.b));
    assert.notEqual(registration.a.body.options.publicKey.challenge,
      registration.b.body.options.publicKey.challenge);
    assertProblem(registration.crossed, 400, 'webauthn_failed');
    assert.deepEqual(registration.listed.body, [], 'nothing registered');
    assert.equal(registration.own.status, 201, JSON.stringify(registration.own));
    assert.deepEqual(await carol.passkeys(), [[registration.own.body.id, 'Own']]);

    const login = await inPage(carol.tab, async () => {
      const { call, get } = window.passkeys;
      const a = await call('POST', '/auth/passkeys/login/options');
      const b = await call('POST', '/auth/passkeys/login/options');
      if (a.status !== 200 || b.status !== 200) return { a, b };
      const credential = await get(a.body.options.publicKey);
      const crossed = await call('POST', '/auth/passkeys/login',
        { body: { ceremony_token: b.body.ceremony_token, credential, client: 'native' } });
      const own = await call('POST', '/auth/passkeys/login',
        { body: { ceremony_token: a.body.ceremony_token, credential, client: 'native' } });
      return { a, b, crossed, own };
    });
    assert.equal(login.a.status, 200, JSON.stringify(login.a));
    assert.equal(login.b.status, 200, JSON.stringify(login.b));
    assertProblem(login.crossed, 400, 'webauthn_failed');
    assert.equal(login.crossed.body.access_token, undefined);
    assert.equal(login.own.status, 200, JSON.stringify(login.own));
    assert.equal(login.own.body.user.id, carol.id);
    await carol.context.close();
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

  await check('hostile attestations are refused with 400 webauthn_failed, never a 500', async () => {
    const dave = await newUser('dave');
    const refusals = await inPage(dave.tab, async (token) => {
      const { call, create } = window.passkeys;
      const base64url = (bytes) => btoa(String.fromCharCode(...bytes))
        .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
      // The first half of the bytes (whole base64 quads), or of the characters.
      const halfBytes = (text) => text.slice(0, Math.floor(text.length / 8) * 4);
      const halfChars = (text) => text.slice(0, Math.floor(text.length / 2));
      const registerWith = async (mangle) => {
        const start = await call('POST', '/auth/passkeys/registration/options', { token });
        if (start.status !== 200) return { step: 'options', ...start };
        const credential = await create(start.body.options.publicKey);
        mangle(credential.response);
        return call('POST', '/auth/passkeys/registration',
          { token, body: { ceremony_token: start.body.ceremony_token, credential, name: 'Hostile' } });
      };
      const out = {};
      out['attestationObject: its first half'] = await registerWith((r) => {
        r.attestationObject = halfBytes(r.attestationObject);
      });
      out['attestationObject: half its characters'] = await registerWith((r) => {
        r.attestationObject = halfChars(r.attestationObject);
      });
      out['attestationObject: random bytes'] = await registerWith((r) => {
        const length = Math.floor(r.attestationObject.length * 3 / 4);
        r.attestationObject = base64url(crypto.getRandomValues(new Uint8Array(length)));
      });
      out['clientDataJSON: its first half'] = await registerWith((r) => {
        r.clientDataJSON = halfBytes(r.clientDataJSON);
      });
      return out;
    }, dave.token);
    for (const [what, reply] of Object.entries(refusals)) {
      assert.ok(reply.status < 500, `${what}: ${JSON.stringify(reply)}`);
      assert.equal(reply.status, 400, `${what}: ${JSON.stringify(reply)}`);
      assertProblem(reply, 400, 'webauthn_failed');
    }
    assert.deepEqual(await dave.passkeys(), [], 'nothing registered');
    // The same account and authenticator register an unmangled passkey.
    const reply = await inPage(dave.tab, (token) => window.passkeys.register(token, 'Clean'), dave.token);
    assert.equal(reply.status, 201, JSON.stringify(reply));
    assert.deepEqual(await dave.passkeys(), [[reply.body.id, 'Clean']]);
    await dave.context.close();
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
} catch (error) {
  failed += 1;
  console.log(`not ok - the run went to its end\n${error.stack}`);
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

// Last, with the server stopped and its output complete.
await check('no token or WebAuthn value the test saw is in the server log', async () => {
  const log = serverLog();
  assert.ok(secrets.size >= 20, `collected ${secrets.size} values`);
  const fields = new Set(secrets.values());
  for (const field of ['access_token', 'refresh_token', 'ceremony_token', 'mfa_token',
    'clientDataJSON', 'signature', 'attestationObject']) {
    assert.ok(fields.has(field), `the test saw a ${field}`);
  }
  assert.ok(log.includes('signed in with a passkey'), 'the log is at info level or finer');
  const leaked = [...secrets].filter(([value]) => log.includes(value))
    .map(([value, field]) => `${field} ${value.slice(0, 12)}...`);
  assert.deepEqual(leaked, [], `in the log: ${leaked.join(', ')}`);
  console.log(`# ${secrets.size} values looked for in ${log.split('\n').length} lines of log`);
});

if (failed > 0 && !verbose) {
  console.log('# the server said:');
  process.stdout.write(serverLog());
}
console.log(`${passed} passed, ${failed} failed (${backend})`);
process.exit(failed === 0 ? 0 : 1);
