// Real JupyterLab behind the proxy, in a real browser (Debian's headless Chromium driven by
// playwright-core). alice logs in to the proxy, opens her JupyterLab workspace (served under
// its prefix: `--ServerApp.base_url` and the `guildnet.io/proxy-keep-prefix` annotation),
// logs in to JupyterLab with the token its container was given, starts a Python kernel from
// the launcher, runs `1+1` and sees `2` (the kernel's WebSocket through the proxy), saves the
// notebook as GUILDNET_NOTEBOOK, reloads and finds it with its output. A screenshot of every
// step lands in GUILDNET_ARTIFACTS. It fails on console errors that come from the proxy.
//
//   GUILDNET_PROXY_URL=http://127.0.0.1:18090 GUILDNET_ALICE_TOKEN=... \
//   GUILDNET_WORKSPACE_PATH=/w/default/lab-1/ GUILDNET_IDE_TOKEN=... GUILDNET_NOTEBOOK=check.ipynb \
//   GUILDNET_ARTIFACTS=target/e2e-artifacts/jupyterlab node e2e/browser/jupyterlab.mjs
//
// Exits 0 when every step passed, 1 otherwise (with the failing step, a screenshot of it and
// the browser's console). Never downloads a browser: GUILDNET_CHROMIUM (default
// /usr/bin/chromium) must exist.

import {
  Steps, artifactsDir, check, chromiumPath, driveBrowser, env, log, poll, proxyConsoleErrors, proxyLogin, runAll,
  workspaceOf,
} from './harness.mjs';

const STEP_TIMEOUT = 120_000; // a kernel starting on a busy 2-core machine
const TOTAL_TIMEOUT = 480_000;

const base = env('GUILDNET_PROXY_URL').replace(/\/+$/, '');
const token = env('GUILDNET_ALICE_TOKEN').trim();
const wsPath = env('GUILDNET_WORKSPACE_PATH');
const labToken = env('GUILDNET_IDE_TOKEN');
const artifacts = artifactsDir();
const executablePath = chromiumPath();
workspaceOf(wsPath);
const notebook = env('GUILDNET_NOTEBOOK');

const console_ = [];
let page;
const record = new Steps(artifacts);
const run = (label, body) => record.run(label, body);

/** The notebook's last output, as the page shows it. */
async function lastOutput() {
  return (await page.locator('.jp-Notebook .jp-OutputArea-output').last().innerText().catch(() => '')).trim();
}

const main = () => driveBrowser(
  { executablePath, timeout: STEP_TIMEOUT, artifacts, consoleLines: console_ },
  async (first) => { page = first; await steps(); },
);

async function steps() {
  await run('alice logs in to the proxy', () => proxyLogin(page, base, token));

  await run(`${wsPath}lab shows JupyterLab's own login, under the prefix`, async () => {
    await page.goto(`${base}${wsPath}lab`);
    await page.waitForURL((u) => u.pathname === `${wsPath}login`);
    await page.locator('#password_input').waitFor();
    await record.shot(page, 'jupyter-login');
  });

  await run('its token opens JupyterLab and the launcher', async () => {
    await page.fill('#password_input', labToken);
    await Promise.all([page.waitForURL((u) => u.pathname.startsWith(`${wsPath}lab`)), page.click('#login_submit')]);
    await page.locator('.jp-Launcher').waitFor({ state: 'visible' });
    await record.shot(page, 'launcher');
  });

  await run('a Python kernel runs 1+1 and answers 2', async () => {
    await page.locator('.jp-LauncherCard[data-category="Notebook"]').first().click();
    const cell = page.locator('.jp-Notebook .jp-Cell .cm-content').first();
    await cell.waitFor({ state: 'visible' });
    // A cell run before the kernel is connected is not executed: wait for the status bar's
    // "Python 3 (ipykernel) | Idle".
    await page.locator('.jp-StatusBar-TextItem', { hasText: /\| Idle$/ }).first().waitFor({ state: 'visible' });
    await cell.click();
    await page.keyboard.type('1+1');
    await page.keyboard.press('Shift+Enter');
    await poll('the output 2', async () => (await lastOutput()) === '2', STEP_TIMEOUT);
    await record.shot(page, 'kernel-answered');
  });

  await run(`the notebook is saved as ${notebook}`, async () => {
    await page.locator('.jp-NotebookPanel-toolbar [data-command="docmanager:save"]').first().click();
    // The first save of an untitled notebook asks for its name.
    const dialog = page.locator('.jp-Dialog');
    await dialog.locator('input').first().fill(notebook);
    await dialog.locator('.jp-mod-accept').click();
    const saved = await poll(`${notebook} saved with its cell`, () => page.evaluate(async (url) => {
      const response = await fetch(url, { credentials: 'same-origin' });
      if (!response.ok) return null;
      const model = await response.json();
      const cells = model.content?.cells ?? [];
      return cells.some((c) => [].concat(c.source).join('') === '1+1'
        && (c.outputs ?? []).some((o) => o.data?.['text/plain'] === '2')) ? model.path : null;
    }, `${wsPath}api/contents/${notebook}?content=1`), STEP_TIMEOUT);
    log(`  saved ${saved}`);
  });

  await run('after a reload the notebook is listed and shows its output', async () => {
    await page.reload();
    await page.locator('.jp-DirListing-item', { hasText: notebook }).first().waitFor({ state: 'visible' });
    await page.locator('.jp-DirListing-item', { hasText: notebook }).first().dblclick();
    await poll('the reopened notebook to show 2', async () => (await lastOutput()) === '2', STEP_TIMEOUT);
    await record.shot(page, 'reloaded');
  });

  await run('no console error came from the proxy', async () => {
    const errors = proxyConsoleErrors(console_);
    check(errors.length === 0, `console errors from the proxy:\n  ${errors.join('\n  ')}`);
  });
}

await runAll({
  intro: `proxy at ${base}, JupyterLab at ${wsPath}, screenshots in ${artifacts}`,
  main,
  totalTimeout: TOTAL_TIMEOUT,
  progress: () => record.progress(),
  diagnostics: () => [
    ...(console_.length ? [`browser console:\n  ${console_.slice(-60).join('\n  ')}`] : []),
  ],
});
