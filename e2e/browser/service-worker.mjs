// A workspace's service worker in a real browser (Debian's headless Chromium driven by
// playwright-core). The workspace's app (the test upstream) sends its worker script with
// `Service-Worker-Allowed: /`, as code-server does. In path mode the workspace shares the
// dashboard's origin, so a worker with scope `/` would control the dashboard and `/login`,
// where users paste their Kubernetes token. This checks, as alice:
//   - directly at the app's own origin, the browser honours the header (scope `/` is
//     accepted): what makes the steps through the proxy meaningful;
//   - through the proxy, a page of the workspace cannot register the worker for `/`, for the
//     namespace's other workspaces, or for a path that merely begins with its own;
//   - within its prefix it can, and that worker then answers the workspace's requests;
//   - afterwards no worker controls `/` or `/login`, and every registration of the origin is
//     under the workspace's prefix.
// A screenshot of every step lands in GUILDNET_ARTIFACTS.
//
//   GUILDNET_PROXY_URL=http://127.0.0.1:18090 GUILDNET_ALICE_TOKEN=... \
//   GUILDNET_WORKSPACE_PATH=/w/default/sw-1/ GUILDNET_UPSTREAM_URL=http://10.244.0.7:8080/ \
//   GUILDNET_ARTIFACTS=target/e2e-artifacts/service-worker node e2e/browser/service-worker.mjs
//
// Exits 0 when every step passed, 1 otherwise (with the failing step, a screenshot of it and
// the browser's console). Never downloads a browser: GUILDNET_CHROMIUM (default
// /usr/bin/chromium) must exist.

import {
  Steps, artifactsDir, check, chromiumPath, driveBrowser, env, log, runAll, workspaceOf,
} from './harness.mjs';

const STEP_TIMEOUT = 30_000; // one step: a page loading, a worker activating
const TOTAL_TIMEOUT = 180_000; // the whole run


const base = env('GUILDNET_PROXY_URL').replace(/\/+$/, '');
const token = env('GUILDNET_ALICE_TOKEN').trim();
const wsPath = env('GUILDNET_WORKSPACE_PATH');
const upstream = new URL(env('GUILDNET_UPSTREAM_URL')).origin;
const artifacts = artifactsDir();
const executablePath = chromiumPath();
workspaceOf(wsPath);

const WORKER_ANSWER = 'answered by the workspace service worker';
const console_ = [];
let page;
const record = new Steps(artifacts);
const shot = (label) => record.shot(page, label);
const run = (label, body) => record.run(label, body);

/** In the page: registers `script` with `scope`, answering {ok, scope} or {ok: false, error}. */
async function register(script, scope) {
  return page.evaluate(async ([script, scope]) => {
    try {
      const registration = await navigator.serviceWorker.register(script, { scope });
      return { ok: true, scope: registration.scope };
    } catch (e) {
      return { ok: false, error: `${e.name}: ${e.message}` };
    }
  }, [script, scope]);
}

/** In the page: whether a worker controls it, and what `?from-worker` on `url` answers. */
async function controlled(url) {
  return page.evaluate(async (url) => {
    const probe = new URL(url, location.href);
    probe.searchParams.set('from-worker', '1');
    const answer = await (await fetch(probe, { credentials: 'same-origin' })).text();
    return { controller: navigator.serviceWorker.controller?.scriptURL ?? null, answer: answer.slice(0, 200) };
  }, url);
}

/** In the page: the scopes of every service worker registered for its origin. */
async function scopes() {
  return page.evaluate(async () => (await navigator.serviceWorker.getRegistrations()).map((r) => r.scope));
}

async function main() {
  // The app's own origin (a pod IP over plain HTTP) may use service workers for the control
  // step; the proxy's, on 127.0.0.1, is a secure context anyway.
  const extraArgs = [`--unsafely-treat-insecure-origin-as-secure=${upstream}`];
  await driveBrowser(
    { executablePath, timeout: STEP_TIMEOUT, extraArgs, artifacts, consoleLines: console_ },
    async (first) => { page = first; await steps(); },
  );
}

async function steps() {
  await run(`at its own origin (${upstream}) the app's header does widen a worker's scope`, async () => {
    await page.goto(`${upstream}/deep/page/`);
    const root = await register('/deep/sw.js', '/');
    check(root.ok && root.scope === `${upstream}/`,
      `directly at the app, /deep/sw.js with Service-Worker-Allowed: / may claim /: ${JSON.stringify(root)}`);
    await shot('own-origin-control');
    await page.evaluate(async () => {
      for (const r of await navigator.serviceWorker.getRegistrations()) await r.unregister();
    });
  });

  await run('alice logs in to the proxy', async () => {
    await page.goto(`${base}/login`);
    await page.fill('#token', token);
    const [response] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/login' && r.request().method() === 'POST'),
      page.click('#login-submit'),
    ]);
    check(response.status() === 303, `a good token gets 303 to the dashboard, got ${response.status()}`);
    await page.waitForURL((u) => u.pathname === '/');
  });

  await run(`a page of ${wsPath} cannot register a worker outside its prefix`, async () => {
    const response = await page.goto(`${base}${wsPath}`);
    check(response.status() === 200, `${wsPath} answers 200, got ${response.status()}`);
    const namespacePath = wsPath.replace(/[^/]+\/$/, '');
    for (const scope of ['/', '/login', namespacePath, wsPath.slice(0, -1)]) {
      const attempt = await register('sw.js', scope);
      log(`  scope ${scope}: ${JSON.stringify(attempt)}`);
      check(!attempt.ok, `registering sw.js for scope ${scope} from ${wsPath} is refused: ${JSON.stringify(attempt)}`);
      check(attempt.error.startsWith('SecurityError'),
        `the browser refuses scope ${scope} as a security error (the scope), not for another reason: ${attempt.error}`);
    }
    check((await scopes()).length === 0, `nothing was registered: ${JSON.stringify(await scopes())}`);
    await shot('refused');
  });

  await run('within its prefix the worker registers and answers the workspace\'s requests', async () => {
    const own = await register('sw.js', wsPath);
    check(own.ok && own.scope === `${base}${wsPath}`, `sw.js may claim ${wsPath}: ${JSON.stringify(own)}`);
    const deeper = await register('sw.js', `${wsPath}deeper/`);
    check(deeper.ok, `sw.js may claim a path under ${wsPath}: ${JSON.stringify(deeper)}`);
    await page.evaluate(() => navigator.serviceWorker.ready);
    // clients.claim() in the worker's activate: this page comes under its control.
    const deadline = Date.now() + STEP_TIMEOUT;
    let state;
    for (;;) {
      state = await controlled('./probe');
      if (state.controller && state.answer === WORKER_ANSWER) break;
      check(Date.now() < deadline, `waited ${STEP_TIMEOUT / 1000}s for the worker to control ${wsPath}: ${JSON.stringify(state)}`);
      await page.waitForTimeout(100);
    }
    check(state.controller === `${base}${wsPath}sw.js`, `the workspace's own worker controls it: ${JSON.stringify(state)}`);
    await shot('registered-within');
  });

  for (const where of ['/', '/login']) {
    await run(`no worker controls ${where}`, async () => {
      const response = await page.goto(`${base}${where}`);
      check(response.status() === 200, `${where} answers 200, got ${response.status()}`);
      check(new URL(page.url()).pathname === where, `the browser is at ${where}, not ${page.url()}`);
      check(!response.fromServiceWorker(), `${where} came from the proxy, not from a service worker`);
      if (where === '/login') check(await page.locator('#token').count() === 1, 'the login form is the proxy\'s');
      const state = await controlled(where);
      check(state.controller === null, `no worker controls ${where}: ${JSON.stringify(state)}`);
      check(state.answer !== WORKER_ANSWER, `requests from ${where} reach the proxy: ${JSON.stringify(state)}`);
      const registered = await scopes();
      check(registered.length > 0 && registered.every((s) => s.startsWith(`${base}${wsPath}`)),
        `every registration of the origin is under ${wsPath}: ${JSON.stringify(registered)}`);
      await shot(where === '/' ? 'dashboard-uncontrolled' : 'login-uncontrolled');
    });
  }
}

await runAll({
  intro: `proxy at ${base}, workspace ${wsPath}, its app at ${upstream}, screenshots in ${artifacts}`,
  main,
  totalTimeout: TOTAL_TIMEOUT,
  progress: () => record.progress(),
  diagnostics: () => [
    ...(console_.length ? [`browser console:\n  ${console_.slice(-40).join('\n  ')}`] : []),
  ],
});
