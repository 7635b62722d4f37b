// Another user's IDE, in a real browser (Debian's headless Chromium driven by playwright-core):
// bob, logged in to the proxy, opens alice's code-server URL and gets the proxy's 403 page,
// not code-server's login; posting alice's code-server password to its login gets the same
// 403 and no code-server session cookie; so do its deeper paths and its WebSocket. A
// screenshot of every step lands in GUILDNET_ARTIFACTS.
//
//   GUILDNET_PROXY_URL=http://127.0.0.1:18090 GUILDNET_BOB_TOKEN=... \
//   GUILDNET_WORKSPACE_PATH=/w/default/code-1/ GUILDNET_IDE_PASSWORD=... \
//   GUILDNET_ARTIFACTS=target/e2e-artifacts/ide-forbidden node e2e/browser/ide-forbidden.mjs
//
// Exits 0 when every step passed, 1 otherwise. Never downloads a browser: GUILDNET_CHROMIUM
// (default /usr/bin/chromium) must exist.

import { Steps, artifactsDir, check, chromiumPath, driveBrowser, env, log, proxyLogin, runAll } from './harness.mjs';

const STEP_TIMEOUT = 30_000;
const TOTAL_TIMEOUT = 120_000;

const base = env('GUILDNET_PROXY_URL').replace(/\/+$/, '');
const token = env('GUILDNET_BOB_TOKEN').trim();
const wsPath = env('GUILDNET_WORKSPACE_PATH');
const password = env('GUILDNET_IDE_PASSWORD');
const artifacts = artifactsDir();
const executablePath = chromiumPath();

const console_ = [];
let page;
const record = new Steps(artifacts);
const run = (label, body) => record.run(label, body);

/** Checks that `response` is the proxy's refusal, not anything of code-server's. */
async function refusedByTheProxy(response, what) {
  const body = await response.text();
  check(response.status() === 403, `${what}: 403 from the proxy, got ${response.status()}: ${body.slice(0, 300)}`);
  check(!/code-server|vscode/i.test(body), `${what}: the body is the proxy's, not code-server's: ${body.slice(0, 300)}`);
  const cookies = response.headers()['set-cookie'] ?? '';
  check(!cookies.includes('code-server-session'), `${what}: no code-server session cookie: ${cookies}`);
}

const main = () => driveBrowser(
  { executablePath, timeout: STEP_TIMEOUT, artifacts, consoleLines: console_ },
  async (first, context) => { page = first; await steps(context); },
);

async function steps(context) {
  await run('bob logs in to the proxy', () => proxyLogin(page, base, token));

  await run(`bob opening alice's ${wsPath} gets the proxy's 403`, async () => {
    const response = await page.goto(`${base}${wsPath}`);
    await refusedByTheProxy(response, `GET ${wsPath}`);
    check(await page.locator('input[name="password"]').count() === 0, 'no code-server login form is shown');
    await record.shot(page, 'forbidden');
  });

  await run('alice\'s code-server password does not help', async () => {
    const login = await context.request.post(`${base}${wsPath}login`, {
      form: { password },
      maxRedirects: 0,
      failOnStatusCode: false,
    });
    await refusedByTheProxy(login, `POST ${wsPath}login with alice's password`);
    const after = await context.cookies(`${base}${wsPath}`);
    check(!after.some((c) => c.name === 'code-server-session'),
      `bob's browser holds no code-server session: ${JSON.stringify(after.map((c) => c.name))}`);
    for (const path of [`${wsPath}healthz`, `${wsPath}static/`, `${wsPath}?folder=/`]) {
      const response = await context.request.get(`${base}${path}`, { maxRedirects: 0, failOnStatusCode: false });
      await refusedByTheProxy(response, `GET ${path}`);
    }
  });

  await run('nor does a WebSocket to it open', async () => {
    const outcome = await page.evaluate((url) => new Promise((resolve) => {
      const socket = new WebSocket(url);
      socket.onopen = () => { socket.close(); resolve('open'); };
      socket.onerror = () => resolve('refused');
    }), `${base.replace(/^http/, 'ws')}${wsPath}?type=Management&reconnectionToken=x&reconnection=false&skipWebSocketFrames=false`);
    check(outcome === 'refused', `the WebSocket is refused, got ${outcome}`);
    log('  the WebSocket was refused');
  });
}

await runAll({
  intro: `proxy at ${base}, bob against ${wsPath}, screenshots in ${artifacts}`,
  main,
  totalTimeout: TOTAL_TIMEOUT,
  progress: () => record.progress(),
  diagnostics: () => [
    ...(console_.length ? [`browser console:\n  ${console_.slice(-40).join('\n  ')}`] : []),
  ],
});
