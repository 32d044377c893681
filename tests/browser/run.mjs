// Real-browser test: headless Chromium loads a page from a second origin on loopback and
// uses servauth the way a browser app does (cookie session, CSRF token, CORS). The same
// page from an origin that is not allowed must be refused. The API reference page (/docs)
// must render with nothing fetched from anywhere but servauth itself.
//
// Usage: node run.mjs [path/to/servauth]   (default: ../../target/debug/servauth)
// SCREENSHOT_DIR=dir keeps the screenshots (docs.png, …); by default they go with the run.
import { spawn } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync, statSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { freePort, servePage, waitFor } from './loopback.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.argv[2] ?? join(here, '..', '..', 'target', 'debug', 'servauth');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const page = readFileSync(join(here, 'page.html'));

const [apiPort, allowedPort, deniedPort] = [await freePort(), await freePort(), await freePort()];
const api = `http://localhost:${apiPort}`;
const allowed = `http://localhost:${allowedPort}`;
const denied = `http://localhost:${deniedPort}`;
const dataDir = mkdtempSync(join(tmpdir(), 'servauth-browser-'));
const screenshots = process.env.SCREENSHOT_DIR ?? dataDir;
mkdirSync(screenshots, { recursive: true });

const server = spawn(binary, ['serve'], {
  env: {
    PATH: process.env.PATH,
    DATABASE_URL: `sqlite://${join(dataDir, 'browser.db')}`,
    SERVAUTH_LISTEN: `127.0.0.1:${apiPort}`,
    SERVAUTH_PUBLIC_URL: api,
    SERVAUTH_CORS_ORIGINS: allowed,
    SERVAUTH_ARGON2_MEMORY_KIB: '1024',
    SERVAUTH_ARGON2_ITERATIONS: '1',
    SERVAUTH_LOG: 'warn',
  },
  stdio: ['ignore', 'inherit', 'inherit'],
});
const pages = [await servePage(page, allowedPort), await servePage(page, deniedPort)];
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

try {
  await waitFor(`${api}/health`);
  const email = 'ada@example.com';
  const password = 'correct horse battery staple';
  const registered = await fetch(`${api}/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password, client: 'native' }),
  });
  assert.equal(registered.status, 201);

  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });

  await check('an allowed origin logs in, reads /auth/me, refreshes through the cookie, logs out', async () => {
    const context = await browser.newContext();
    const tab = await context.newPage();
    await tab.goto(`${allowed}/?api=${encodeURIComponent(api)}`);
    const login = await tab.evaluate(([e, p]) => window.client.login(e, p), [email, password]);
    assert.deepEqual(login, { status: 200, hasRefreshToken: false });

    const cookies = await context.cookies();
    const refresh = cookies.find((cookie) => cookie.name === 'servauth_refresh');
    assert.ok(refresh, 'the refresh cookie is stored');
    assert.equal(refresh.httpOnly, true);
    assert.equal(refresh.path, '/auth');
    assert.equal(refresh.sameSite, 'Lax');
    assert.ok(!(await tab.evaluate(() => window.client.readableCookies())).includes('servauth_refresh'),
      'scripts cannot read the refresh cookie');

    const me = await tab.evaluate(() => window.client.me());
    assert.equal(me.status, 200);
    assert.equal(me.body.email, email);

    const withoutCsrf = await tab.evaluate(() => window.client.refreshWithoutCsrf());
    assert.equal(withoutCsrf.status, 403);
    assert.equal(withoutCsrf.body.code, 'csrf_failed');

    const refreshed = await tab.evaluate(() => window.client.refresh());
    assert.deepEqual(refreshed, { status: 200, rotated: true, code: undefined });
    const rotatedCookie = (await context.cookies()).find((c) => c.name === 'servauth_refresh');
    assert.notEqual(rotatedCookie.value, refresh.value, 'the cookie rotated');
    assert.equal((await tab.evaluate(() => window.client.me())).status, 200);

    const logout = await tab.evaluate(() => window.client.logout());
    assert.equal(logout.status, 204);
    const left = (await context.cookies()).filter((c) => c.name.startsWith('servauth_'));
    assert.deepEqual(left.map((c) => c.name), ['servauth_device'],
      'logout clears the session cookies; the device cookie stays (it vouches for the device)');
    assert.ok(left[0].httpOnly, 'scripts cannot read the device cookie');
    assert.equal((await tab.evaluate(() => window.client.me())).status, 401);
    const after = await tab.evaluate(() => window.client.refresh());
    assert.equal(after.status, 401);
    await tab.screenshot({ path: join(screenshots, 'allowed.png') });
    await context.close();
  });

  await check('an origin not in SERVAUTH_CORS_ORIGINS cannot use the API', async () => {
    const context = await browser.newContext();
    const tab = await context.newPage();
    await tab.goto(`${denied}/?api=${encodeURIComponent(api)}`);
    const outcome = await tab.evaluate(([e, p]) => window.client.login(e, p).then(
      (reply) => `answered ${reply.status}`,
      (error) => `refused: ${error.name}`,
    ), [email, password]);
    assert.equal(outcome, 'refused: TypeError', 'CORS keeps the response from the page');
    await context.close();
  });
  await check('/docs renders every operation offline: no request leaves the servauth origin', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const tab = await context.newPage();
    const elsewhere = [];
    await tab.route('**/*', (route) => {
      const url = route.request().url();
      if (new URL(url).origin === api) return route.continue();
      elsewhere.push(url);
      return route.abort();
    });
    const refused = [];
    tab.on('console', (message) => {
      if (message.type() === 'error') refused.push(message.text());
    });
    const response = await tab.goto(`${api}/docs`, { waitUntil: 'networkidle' });
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-security-policy'], /^default-src 'none'; style-src 'sha256-/);
    assert.deepEqual(elsewhere, [], 'requests to other origins');
    assert.deepEqual(refused, [], 'console errors (a CSP refusal shows here)');

    const document = await (await fetch(`${api}/openapi.json`)).json();
    const operations = Object.entries(document.paths)
      .flatMap(([path, item]) => Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`));
    assert.ok(operations.length >= 24, `${operations.length} operations documented`);
    const headings = tab.locator('h3.operation');
    assert.ok(await headings.count() >= operations.length, 'a heading per operation');
    const shown = (await headings.allTextContents()).map((text) => text.replace(/\s+/g, ' ').trim());
    for (const operation of operations) {
      assert.ok(shown.includes(operation), `${operation} is on the page`);
    }
    assert.ok(await headings.first().isVisible());
    // The stylesheet applied (its hash is the one the policy allows): badges are coloured.
    const badge = await tab.locator('.method.post').first()
      .evaluate((element) => getComputedStyle(element).backgroundColor);
    assert.equal(badge, 'rgb(11, 92, 173)');

    const shot = join(screenshots, 'docs.png');
    await tab.screenshot({ path: shot });
    const bytes = statSync(shot).size;
    assert.ok(bytes > 50_000, `docs.png is ${bytes} bytes: the page looks empty`);
    console.log(`# ${shot}: ${bytes} bytes, ${operations.length} operations`);
    await context.close();
  });
} finally {
  await browser?.close();
  pages.forEach((p) => p.close());
  server.kill('SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
