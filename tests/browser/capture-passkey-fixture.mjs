// One-off capture of the fixture for the Rust micro-benchmark of webauthn-rs's
// `finish_passkey_authentication`: writes benches/fixtures/passkey_assertion.json =
//   { rp_id, origin, passkey, state, assertion }
// where `passkey` is webauthn-rs's serialized `Passkey` (mfa_factors.secret), `state` its
// serialized `PasskeyAuthentication` (the `webauthn` field of the mfa_login challenge's
// state) and `assertion` the browser's `PublicKeyCredential.toJSON()` answering that state's
// challenge. The assertion is never posted, so the state stays valid for the benchmark.
//
// How: a real servauth on a fresh SQLite file, headless Chromium with a CDP virtual
// authenticator (as passkeys.mjs), a page on the FIXED origin http://localhost:43117 (so
// the fixture's origin is stable). Register a user, register a passkey, password-login,
// ask for the WebAuthn options of the mfa_token, sign them in the page; stop the server and
// read the passkey and the state from the database with the sqlite3 CLI.
//
// Re-run (from the repository root, after `cargo build`):
//   node tests/browser/capture-passkey-fixture.mjs [path/to/servauth] [output.json]
//   (defaults: target/debug/servauth, benches/fixtures/passkey_assertion.json;
//    CHROMIUM overrides /usr/bin/chromium; needs the sqlite3 CLI on PATH)
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { freePort, servePage, waitFor } from './loopback.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const binary = process.argv[2] ?? join(root, 'target', 'debug', 'servauth');
const output = process.argv[3] ?? join(root, 'benches', 'fixtures', 'passkey_assertion.json');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const pagePort = 43117;
const origin = `http://localhost:${pagePort}`;
const rpId = 'localhost';
const email = 'bench@example.com';
const password = 'correct horse battery staple 42';

// A call from node, for what carries no WebAuthn data.
async function call(api, method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(api + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

// One column of the rows `sql` selects, each a JSON text.
function selectJson(dbFile, sql) {
  const result = spawnSync('sqlite3', ['-readonly', '-noheader', '-list', dbFile, sql], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`sqlite3 ${sql}: ${result.stderr || result.error}`);
  return result.stdout.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line));
}

const apiPort = await freePort();
const api = `http://localhost:${apiPort}`;
const dataDir = mkdtempSync(join(tmpdir(), 'servauth-passkey-fixture-'));
const dbFile = join(dataDir, 'fixture.db');

const server = spawn(binary, ['serve'], {
  env: {
    PATH: process.env.PATH,
    DATABASE_URL: `sqlite://${dbFile}`,
    SERVAUTH_LISTEN: `127.0.0.1:${apiPort}`,
    SERVAUTH_PUBLIC_URL: api,
    SERVAUTH_CORS_ORIGINS: origin,
    SERVAUTH_WEBAUTHN_RP_ID: rpId,
    SERVAUTH_WEBAUTHN_ORIGINS: origin,
    SERVAUTH_ARGON2_MEMORY_KIB: '1024',
    SERVAUTH_ARGON2_ITERATIONS: '1',
    SERVAUTH_LOG: process.env.SERVAUTH_LOG ?? 'warn',
  },
  stdio: ['ignore', 'inherit', 'inherit'],
});
const exited = new Promise((resolve) => server.on('exit', resolve));
const html = readFileSync(join(here, 'passkeys.html'));
const pageServer = await servePage(html, pagePort);

let browser;
let assertion;
try {
  await waitFor(`${api}/health`);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext();
  const tab = await context.newPage();
  const cdp = await context.newCDPSession(tab);
  await cdp.send('WebAuthn.enable');
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  await tab.goto(`${origin}/?api=${encodeURIComponent(api)}`);

  // A user, and a passkey registered from the page.
  const account = await call(api, 'POST', '/auth/register', { body: { email, password, client: 'native' } });
  assert.equal(account.status, 201, JSON.stringify(account.body));
  const registered = await tab.evaluate((token) => window.passkeys.register(token, 'Bench'),
    account.body.access_token);
  assert.equal(registered.status, 201, JSON.stringify(registered));

  // A password sign-in waiting on its second factor; the passkey's answer, not sent.
  const login = await call(api, 'POST', '/auth/login', { body: { email, password, client: 'native' } });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  assert.equal(login.body.mfa_required, true, JSON.stringify(login.body));
  const signed = await tab.evaluate(async (mfa_token) => {
    const start = await window.passkeys.call('POST', '/auth/mfa/webauthn/options', { body: { mfa_token } });
    if (start.status !== 200) return { start };
    return { start, assertion: await window.passkeys.get(start.body.options.publicKey) };
  }, login.body.mfa_token);
  assert.equal(signed.start.status, 200, JSON.stringify(signed.start));
  assertion = signed.assertion;
  await context.close();
} finally {
  await browser?.close();
  pageServer.close();
  server.kill('SIGTERM');
  await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
}

try {
  const states = selectJson(dbFile, "SELECT state FROM auth_challenges WHERE purpose = 'mfa_login'");
  const passkeys = selectJson(dbFile, "SELECT CAST(secret AS TEXT) FROM mfa_factors WHERE kind = 'passkey'");
  assert.equal(states.length, 1, `one mfa_login challenge, found ${states.length}`);
  assert.equal(passkeys.length, 1, `one passkey, found ${passkeys.length}`);
  const state = states[0].webauthn;
  assert.ok(state, `the mfa_login challenge holds a webauthn state: ${JSON.stringify(states[0])}`);

  const fixture = { rp_id: rpId, origin, passkey: passkeys[0], state, assertion };
  mkdirSync(dirname(output), { recursive: true });
  writeFileSync(output, `${JSON.stringify(fixture, null, 2)}\n`);
  console.log(`wrote ${output}`);
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}
