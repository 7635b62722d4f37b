// Real code-server behind the proxy, in a real browser (Debian's headless Chromium driven by
// playwright-core). alice logs in to the proxy, opens her code-server workspace from the
// dashboard, logs in to code-server with the password the operator generated for it, and
// uses VS Code through the proxy: the explorer lists and opens a file the test wrote into the
// folder (the remote file system over the WebSocket), a terminal runs a command and shows its
// output (a pty over the WebSocket), the idle tab keeps the workspace's lastAccessTime moving
// while its WebSocket is open, and a reload reconnects. A screenshot of every step lands in
// GUILDNET_ARTIFACTS. It fails on console errors that come from the proxy (blocked cookies,
// CSP, mixed content, 5xx answers from the proxy).
//
//   GUILDNET_PROXY_URL=http://127.0.0.1:18090 GUILDNET_ALICE_TOKEN=... \
//   GUILDNET_WORKSPACE_PATH=/w/default/code-1/ GUILDNET_IDE_PASSWORD=... \
//   GUILDNET_FILE_NAME=hello.md GUILDNET_FILE_TEXT=... \
//   GUILDNET_ARTIFACTS=target/e2e-artifacts/code-server node e2e/browser/code-server.mjs
//
// Exits 0 when every step passed, 1 otherwise (with the failing step, a screenshot of it and
// the browser's console). Never downloads a browser: GUILDNET_CHROMIUM (default
// /usr/bin/chromium) must exist.

import {
  Steps, artifactsDir, check, chromiumPath, driveBrowser, env, log, poll, proxyConsoleErrors, proxyLogin, runAll,
  workspaceOf,
} from './harness.mjs';

// code-server's workbench is heavy for a 2-core machine that is also running the control
// plane: minutes are realistic for its first load.
const STEP_TIMEOUT = 120_000;
const TOTAL_TIMEOUT = 600_000;
const IDLE = 12_000; // longer than VS Code's keep-alive interval and the proxy's activity interval

const base = env('GUILDNET_PROXY_URL').replace(/\/+$/, '');
const token = env('GUILDNET_ALICE_TOKEN').trim();
const wsPath = env('GUILDNET_WORKSPACE_PATH');
const password = env('GUILDNET_IDE_PASSWORD');
const fileName = env('GUILDNET_FILE_NAME');
const fileText = env('GUILDNET_FILE_TEXT');
const artifacts = artifactsDir();
const executablePath = chromiumPath();
const { namespace, name } = workspaceOf(wsPath);
const tid = (id) => `[data-testid="${id}"]`;

const console_ = [];
let page;
let ide;
const record = new Steps(artifacts);
const run = (label, body) => record.run(label, body);

/** The workspace's `status.lastAccessTime` as alice's dashboard API reports it. */
async function lastAccess() {
  const response = await fetch(`${base}/api/workspaces`, { headers: { authorization: `Bearer ${token}` } });
  check(response.ok, `GET /api/workspaces answers 200, got ${response.status}`);
  const body = await response.json();
  const items = Array.isArray(body) ? body : body.items;
  const ws = items.find((w) => w.namespace === namespace && w.name === name);
  check(ws, `alice's workspaces include ${namespace}/${name}`);
  return ws.lastAccessTime ? Date.parse(ws.lastAccessTime) : 0;
}

/** Waits for the workbench and the explorer row of the test's file. */
async function workbenchWithFile() {
  await ide.locator('.monaco-workbench').waitFor({ state: 'visible' });
  const row = ide.locator('.explorer-folders-view .monaco-list-row', { hasText: fileName });
  await row.first().waitFor({ state: 'visible' });
  return row.first();
}

const main = () => driveBrowser(
  { executablePath, timeout: STEP_TIMEOUT, artifacts, consoleLines: console_, failurePage: () => ide ?? page },
  async (first, context) => { page = first; await steps(context); },
);

async function steps(context) {
  await run('alice logs in to the proxy', async () => {
    await proxyLogin(page, base, token);
    await page.locator(tid(`ws-open-${name}`)).waitFor();
    await record.shot(page, 'dashboard');
  });

  await run('Open from the dashboard shows code-server\'s own login page', async () => {
    const [tab] = await Promise.all([context.waitForEvent('page'), page.click(tid(`ws-open-${name}`))]);
    ide = tab;
    await ide.waitForURL((u) => u.pathname === `${wsPath}login`);
    await ide.locator('input[name="password"]').waitFor();
    await record.shot(ide, 'code-server-login');
  });

  await run('a wrong password is refused by code-server', async () => {
    await ide.fill('input[name="password"]', `${password}-wrong`);
    await Promise.all([ide.waitForLoadState('load'), ide.click('input[type="submit"]')]);
    check(new URL(ide.url()).pathname === `${wsPath}login`, `still at the login page: ${ide.url()}`);
    await ide.locator('.error').waitFor();
  });

  await run('the generated password opens the VS Code workbench', async () => {
    await ide.fill('input[name="password"]', password);
    await Promise.all([ide.waitForURL((u) => u.pathname === wsPath), ide.click('input[type="submit"]')]);
    const cookies = await context.cookies(`${base}${wsPath}`);
    const session = cookies.find((c) => c.name === 'code-server-session');
    check(session, `code-server's session cookie is set for ${wsPath}: ${JSON.stringify(cookies.map((c) => c.name))}`);
    // `/w/<ns>/<name>` matches that path and below only (a cookie path ends at a `/`).
    check(`${session.path}/`.startsWith(wsPath), `its path is the workspace's prefix, got ${session.path}`);
    await ide.locator('.monaco-workbench').waitFor({ state: 'visible' });
    await record.shot(ide, 'workbench');
  });

  await run(`the explorer lists ${fileName}, and it opens in an editor`, async () => {
    const row = await workbenchWithFile();
    await row.click();
    const editor = ide.locator('.editor-instance .monaco-editor .view-lines');
    await poll(`the editor to show ${fileName}'s text`,
      async () => (await editor.innerText().catch(() => '')).replace(/\s+/g, ' ').includes(fileText), STEP_TIMEOUT);
    await record.shot(ide, 'file-opened');
  });

  await run('a terminal runs a command and shows its output', async () => {
    await ide.keyboard.press('Control+Backquote');
    const terminal = ide.locator('.terminal-wrapper.active .xterm');
    await terminal.waitFor({ state: 'visible' });
    const rows = ide.locator('.terminal-wrapper.active .xterm-rows');
    const text = () => rows.innerText().catch(() => '');
    await poll('the shell\'s prompt in the terminal', async () => /[#$]\s*$/m.test(await text()), STEP_TIMEOUT);
    // The output is computed by the shell, so it cannot be the echo of what was typed. Keys
    // typed while the terminal takes focus can be lost: type again after a while without it.
    const input = ide.locator('.terminal-wrapper.active .xterm-helper-textarea');
    await poll('the terminal to print guildnet-42-project', async () => {
      await input.focus();
      await ide.keyboard.type('echo "guildnet-$((6 * 7))-$(basename "$PWD")"');
      await ide.keyboard.press('Enter');
      return poll('this attempt\'s output', async () => (await text()).includes('guildnet-42-project'), 10_000)
        .catch(() => false);
    }, STEP_TIMEOUT);
    await record.shot(ide, 'terminal');
  });

  await run('the idle tab keeps lastAccessTime moving while its WebSocket is open', async () => {
    // Nothing is done in the page from now on: only VS Code's own WebSocket traffic (its
    // keep-alives) can move lastAccessTime, which must go well past the last interaction.
    const idleSince = Date.now();
    const wanted = idleSince + IDLE;
    const after = await poll(`lastAccessTime to reach ${new Date(wanted).toISOString()} while the tab is idle`,
      async () => { const now = await lastAccess(); return now >= wanted ? now : null; }, IDLE + 60_000);
    log(`  idle since ${new Date(idleSince).toISOString()}, lastAccessTime ${new Date(after).toISOString()}`);
  });

  await run('a reload reconnects to the same workspace', async () => {
    await ide.reload();
    check(new URL(ide.url()).pathname === wsPath, `the reload stays at ${wsPath}, not ${ide.url()}`);
    await workbenchWithFile();
    await ide.keyboard.press('Control+Backquote');
    await ide.locator('.terminal-wrapper.active .xterm').waitFor({ state: 'visible' });
    await record.shot(ide, 'reloaded');
  });

  await run('no console error came from the proxy', async () => {
    const errors = proxyConsoleErrors(console_);
    check(errors.length === 0, `console errors from the proxy:\n  ${errors.join('\n  ')}`);
  });
}

await runAll({
  intro: `proxy at ${base}, code-server at ${wsPath}, screenshots in ${artifacts}`,
  main,
  totalTimeout: TOTAL_TIMEOUT,
  progress: () => record.progress(),
  diagnostics: () => [
    ...(console_.length ? [`browser console:\n  ${console_.slice(-60).join('\n  ')}`] : []),
  ],
});
