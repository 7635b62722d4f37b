// The dashboard in a real browser (Debian's headless Chromium driven by playwright-core):
// alice is sent to the login page, is refused with a wrong token, logs in (her workspaces and
// quotas load), is refused an image nobody granted her, launches a workspace from the form,
// sees it become Running and ready, opens it in a new tab and inline, reads and follows its logs, sees its events, suspends and
// resumes it, deletes it and logs out. A screenshot of every step lands in GUILDNET_ARTIFACTS.
//
//   GUILDNET_PROXY_URL=http://127.0.0.1:18090 GUILDNET_ALICE_TOKEN=... \
//   GUILDNET_ARTIFACTS=target/e2e-artifacts/dashboard node e2e/browser/dashboard.mjs
//
// Exits 0 when every step passed, 1 otherwise (with the failing step, a screenshot of it and
// the browser's console). Never downloads a browser: GUILDNET_CHROMIUM (default
// /usr/bin/chromium) must exist.

import {
  Steps, artifactsDir, check, chromiumPath, env, failureArtifacts, log, poll as pollFor, runAll, withBrowser,
} from './harness.mjs';

const STEP_TIMEOUT = 90_000; // one step: a workspace becoming ready, a page loading
const TOTAL_TIMEOUT = 300_000; // the whole run


const base = env('GUILDNET_PROXY_URL').replace(/\/+$/, '');
const token = env('GUILDNET_ALICE_TOKEN').trim();
const artifacts = artifactsDir();
const executablePath = chromiumPath();

const namespace = 'default';
const name = `dash-${Date.now().toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
// The starter Capabilities let every user run the official nginx image.
const image = 'nginx:1.27';
const deniedImage = 'docker.io/library-evil/x';
const wsPath = `/w/${namespace}/${name}/`;
const tid = (id) => `[data-testid="${id}"]`;

const console_ = []; // the browser's console and page errors, printed on failure
const pageErrors = [];
let page;
const record = new Steps(artifacts);
const shot = (label) => record.shot(page, label);
const run = (label, body) => record.run(label, body);

/** Waits until `fn(arg)` is truthy in the page (no fixed sleeps), naming what it waited for. */
async function until(what, fn, arg, timeout = STEP_TIMEOUT) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout, polling: 100 });
    return await handle.jsonValue();
  } catch (e) {
    throw new Error(`waited ${timeout / 1000}s for ${what}: ${e.message.split('\n')[0]}`);
  }
}

/** Polls `fn` until it returns a truthy value, for up to a step's time. */
const poll = (what, fn) => pollFor(what, fn, STEP_TIMEOUT);

/** Waits until the row of the workspace shows `phase` (and ready, when asked). */
async function untilPhase(phase, ready) {
  return until(
    `${name} to show ${phase}${ready ? ' and ready' : ''}`,
    ([n, want, wantReady]) => {
      const el = document.querySelector(`[data-testid="ws-phase-${n}"]`);
      return el && el.textContent === want && (!wantReady || el.dataset.ready === 'true');
    },
    [name, phase, ready],
  );
}

async function main() {
  await withBrowser({ executablePath, timeout: STEP_TIMEOUT }, async (context) => {
    context.on('console', (m) => {
      console_.push(`console.${m.type()}: ${m.text()}`);
      // A failed request shows up as a console error too; those are checked where they happen.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text());
    });
    context.on('weberror', (e) => pageErrors.push(e.error().message));
    page = context.pages()[0] ?? (await context.newPage());
    try {
      await steps(context);
    } catch (e) {
      await failureArtifacts(page, artifacts);
      throw e;
    }
  });
}

async function steps(context) {
  await run('an unauthenticated visit ends at the login page', async () => {
    await page.goto(`${base}/`);
    await page.waitForURL((u) => u.pathname === '/login');
    await page.locator('#token').waitFor();
    const next = await page.locator('input[name="next"]').inputValue();
    check(next === '/' || next === '', `the login form returns to / afterwards, got next=${JSON.stringify(next)}`);
    await shot('login');
  });

  await run('a wrong token is refused with a message', async () => {
    await page.fill('#token', 'not-a-valid-token');
    const [response] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/login' && r.request().method() === 'POST'),
      page.click('#login-submit'),
    ]);
    check(response.status() === 401, `a wrong token gets 401, got ${response.status()}`);
    const error = (await page.locator('#login-error').textContent()).trim();
    check(error.length > 0 && !error.includes('{{'), `the login page says why: ${JSON.stringify(error)}`);
    check((await page.locator('#token').count()) === 1, 'the login form is shown again');
    await shot('login-refused');
  });

  await run('alice logs in and sees the dashboard', async () => {
    await page.fill('#token', token);
    const [response] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/login' && r.request().method() === 'POST'),
      page.click('#login-submit'),
    ]);
    check(response.status() === 303, `a good token gets 303 to the dashboard, got ${response.status()}`);
    await page.waitForLoadState('load');
    if (new URL(page.url()).pathname !== '/') {
      const cookies = await context.cookies(base);
      throw new Error(`after logging in the browser is at ${page.url()}, not the dashboard; `
        + `the proxy set "${await response.headerValue('set-cookie')}" and the browser kept `
        + `${JSON.stringify(cookies.map((c) => c.name))} for ${base}`);
    }
    await until('the signed-in user', () => {
      const u = document.getElementById('user')?.textContent;
      return u && u !== '…' ? u : false;
    });
    const user = await page.locator('#user').textContent();
    check(user === 'alice', `the header names alice, got ${JSON.stringify(user)}`);
    const cookies = await context.cookies(base);
    check(cookies.length > 0, 'logging in set a session cookie');
    for (const c of cookies) check(c.httpOnly, `cookie ${c.name} is HttpOnly`);
    await until('the workspace list to load', () => document.body.dataset.listLoaded === 'true');
    await until('the quotas panel to load', () => document.body.dataset.quotasLoaded === 'true');
    const quotasError = await page.locator('#quotas-error').textContent();
    check(!quotasError, `the quotas panel loads without an error: ${JSON.stringify(quotasError)}`);
    await shot('dashboard');
  });

  await run('an image nobody granted is refused with the reason', async () => {
    await page.fill('#launch-name', `${name}-denied`);
    await page.fill('#launch-image', deniedImage);
    await page.click('#launch-submit');
    const message = await until('the launch error', () => document.getElementById('launch-error').textContent);
    check(/image/i.test(message), `the error names the image field: ${JSON.stringify(message)}`);
    check((await page.locator(tid(`ws-row-${name}-denied`)).count()) === 0, 'no row for a refused workspace');
    await shot('launch-refused');
  });

  await run(`alice launches ${name} from the form`, async () => {
    await page.fill('#launch-name', name);
    await page.fill('#launch-namespace', namespace);
    await page.fill('#launch-image', image);
    await page.selectOption('#launch-hint', 'latency');
    await page.fill('#launch-idle', '30m');
    await page.fill('#launch-vol-name', 'data');
    await page.fill('#launch-vol-path', '/data');
    await page.fill('#launch-vol-size', '1Gi');
    const [response] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/api/workspaces' && r.request().method() === 'POST'),
      page.click('#launch-submit'),
    ]);
    const body = await response.text();
    check(response.status() === 201, `launch answers 201, got ${response.status()}: ${body}`);
    await page.locator(tid(`ws-row-${name}`)).waitFor();
    check(!(await page.locator('#launch-error').textContent()), 'no launch error after a good launch');
    await shot('launched');
  });

  await run(`${name} becomes Running and ready`, async () => {
    await untilPhase('Running', true);
    await shot('running');
  });

  await run('its events reach the events pane', async () => {
    await until(`an event about ${name}`, (n) =>
      [...document.querySelectorAll('[data-testid="event"]')].some((e) => e.dataset.name === n), name);
    await shot('events');
  });

  await run('Open shows the workspace in a new tab', async () => {
    const link = page.locator(tid(`ws-open-${name}`));
    check((await link.getAttribute('href')) === wsPath, `Open links to ${wsPath}`);
    check((await link.getAttribute('target')) === '_blank', 'Open uses a new tab');
    const [response] = await Promise.all([
      context.waitForEvent('response', (r) => new URL(r.url()).pathname === wsPath
        && r.request().resourceType() === 'document'),
      link.click(),
    ]);
    const body = await response.text();
    check(response.status() === 200, `${wsPath} answers 200, got ${response.status()}: ${body.slice(0, 500)}`);
    const tab = response.frame().page();
    await tab.waitForLoadState('domcontentloaded');
    const text = await tab.locator('body').innerText();
    check(text.includes(wsPath) || text.includes(wsPath.slice(0, -1)),
      `the workspace's page mentions ${wsPath}: ${text.slice(0, 500)}`);
    await record.shot(tab, 'opened-tab');
    await tab.close();
    await page.bringToFront();
  });

  await run('Inline shows the workspace in the dashboard', async () => {
    const [response] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === wsPath),
      page.click(tid(`ws-inline-${name}`)),
    ]);
    check(response.status() === 200, `the inline frame loads with 200, got ${response.status()}`);
    const frame = page.frameLocator(tid('inline-frame'));
    await frame.locator('body').waitFor();
    const text = await frame.locator('body').innerText();
    check(text.includes(wsPath.slice(0, -1)), `the inline frame shows the workspace: ${text.slice(0, 300)}`);
    await shot('inline');
    await page.click(tid('inline-close'));
    await page.locator(tid('inline')).waitFor({ state: 'hidden' });
  });

  await run('Logs shows the tail, then follows it live', async () => {
    await page.click(tid(`ws-logs-${name}`));
    await page.locator(tid('logs')).waitFor();
    const lines = () => page.evaluate(() =>
      document.getElementById('logs-text').textContent.split('\n').filter(Boolean).length);
    await poll('log lines (or the reason there are none)', async () => (await lines()) > 0
      || page.evaluate(() => /^Could not/.test(document.getElementById('logs-status').textContent)));
    const status = await page.locator(tid('logs-status')).textContent();
    check(await lines() > 0, `the tail of the log is shown: ${status}`);
    log(`  ${await lines()} lines; ${status}`);
    await page.check(tid('logs-follow'));
    await poll('the followed log to start', async () => (await lines()) > 0);
    const before = await lines();
    await poll('a new line in the followed log', async () => (await lines()) > before);
    await shot('logs');
    await page.uncheck(tid('logs-follow'));
    await page.click(tid('logs-close'));
    await page.locator(tid('logs')).waitFor({ state: 'hidden' });
  });

  await run(`Suspend stops ${name}`, async () => {
    await page.click(tid(`ws-suspend-${name}`));
    await page.locator(tid(`ws-resume-${name}`)).waitFor();
    await untilPhase('Stopped', false);
    await shot('suspended');
  });

  await run(`Resume brings ${name} back`, async () => {
    await page.click(tid(`ws-resume-${name}`));
    await page.locator(tid(`ws-suspend-${name}`)).waitFor();
    await untilPhase('Running', true);
    await shot('resumed');
  });

  await run(`Delete (confirmed) removes ${name}`, async () => {
    let confirmed = '';
    page.once('dialog', (d) => { confirmed = d.message(); d.accept(); });
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'DELETE'),
      page.click(tid(`ws-delete-${name}`)),
    ]);
    check(confirmed.includes(name), `a confirmation names the workspace: ${JSON.stringify(confirmed)}`);
    check(response.status() === 200, `delete answers 200, got ${response.status()}: ${await response.text()}`);
    // Gone for good: the row stays away across a refresh from the server.
    await until(`${name} to leave the list`, (n) => !document.querySelector(`[data-testid="ws-row-${n}"]`), name);
    await poll(`the server's list without ${name}`, () => page.evaluate(async (n) => {
      const r = await fetch('/api/workspaces', { credentials: 'same-origin' });
      const items = (await r.json()).items || [];
      return !items.some((w) => w.name === n);
    }, name));
    await shot('deleted');
  });

  await run('Log out returns to the login page', async () => {
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/login'),
      page.click(tid('logout')),
    ]);
    const r = await page.evaluate(async () => (await fetch('/api/me', { credentials: 'same-origin' })).status);
    check(r === 401, `after logging out /api/me answers 401, got ${r}`);
    await shot('logged-out');
  });

  check(pageErrors.length === 0, `the dashboard reported errors: ${pageErrors.join('; ')}`);
}

await runAll({
  intro: `dashboard at ${base}, workspace ${namespace}/${name}, screenshots in ${artifacts}`,
  main,
  totalTimeout: TOTAL_TIMEOUT,
  progress: () => record.progress(),
  diagnostics: () => [
    ...(pageErrors.length ? [`page errors:\n  ${pageErrors.join('\n  ')}`] : []),
    ...(console_.length ? [`browser console:\n  ${console_.slice(-40).join('\n  ')}`] : []),
  ],
});
