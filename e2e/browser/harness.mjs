// What the browser tests share: their settings from the environment, the browser they use,
// where their screenshots go, and how a run ends (passed, failed with the step, a screenshot
// and the browser's console, or out of time).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

/** The environment variable `name`; exits 2 naming it when it is not set. */
export function env(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set (see the header of the test script)`);
    process.exit(2);
  }
  return value;
}

/** Debian's Chromium (GUILDNET_CHROMIUM, default /usr/bin/chromium): never downloaded. */
export function chromiumPath() {
  const executablePath = process.env.GUILDNET_CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    console.error(`${executablePath} does not exist: install Debian's chromium (scripts/install-deps.sh)`);
    process.exit(2);
  }
  return executablePath;
}

/** GUILDNET_ARTIFACTS, created, without the screenshots of an earlier run. */
export function artifactsDir() {
  const artifacts = path.resolve(env('GUILDNET_ARTIFACTS'));
  fs.mkdirSync(artifacts, { recursive: true });
  for (const f of fs.readdirSync(artifacts)) if (f.endsWith('.png')) fs.rmSync(path.join(artifacts, f));
  return artifacts;
}

/**
 * A run's steps and screenshots, numbered in order; `progress()` is what {@link runAll} reports
 * of them.
 */
export class Steps {
  constructor(artifacts) {
    this.artifacts = artifacts;
    this.step = 0;
    this.current = 'start';
    this.shots = 0;
  }

  /** Runs step `label`, logging its number first. */
  async run(label, body) {
    this.step += 1;
    this.current = `${this.step}. ${label}`;
    log(`step ${this.current}`);
    await body();
  }

  /** A full-page screenshot of `page`, numbered after the earlier ones; returns its file. */
  async shot(page, label) {
    this.shots += 1;
    const file = path.join(this.artifacts, `${String(this.shots).padStart(2, '0')}-${label}.png`);
    await page.screenshot({ path: file, fullPage: true });
    return file;
  }

  progress() {
    return { step: this.step, current: this.current, shots: this.shots };
  }
}

/** Polls `fn` in Node until it returns a truthy value (which it returns), for up to `timeout` ms. */
export async function poll(what, fn, timeout) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`waited ${timeout / 1000}s for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The namespace and name of a workspace path `/w/<namespace>/<name>/`; exits 2 on another. */
export function workspaceOf(wsPath) {
  const match = /^\/w\/([a-z0-9-]+)\/([a-z0-9-]+)\/$/.exec(wsPath);
  if (!match) {
    console.error(`a workspace path is /w/<namespace>/<name>/, got ${wsPath}`);
    process.exit(2);
  }
  return { namespace: match[1], name: match[2] };
}

/**
 * The lines of a browser console (as `console.<type>: <text>`) that blame the proxy: blocked
 * cookies, Content Security Policy, mixed content, and 502/503/504 answers (the proxy's when
 * a workspace does not answer). An app's own errors are its business.
 */
export function proxyConsoleErrors(lines) {
  return lines.filter((line) => line.startsWith('console.error')
    && /cookie|Content Security Policy|Mixed Content|status of 50[234]/i.test(line));
}

export function log(message) {
  console.log(`[${new Date().toISOString().slice(11, 23)}] ${message}`);
}

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** A screenshot and the text of `page` where a step failed, into `artifacts`. */
export async function failureArtifacts(page, artifacts) {
  if (!page || page.isClosed()) return;
  const file = path.join(artifacts, 'failure.png');
  await page.screenshot({ path: file, fullPage: true }).catch(() => {});
  console.error(`screenshot of the failure: ${file}`);
  const text = await page.locator('body').innerText({ timeout: 2000 }).catch(() => '');
  console.error(`page ${page.url()}:\n${text.slice(0, 3000)}`);
}

/**
 * Runs `main` within `totalTimeout` ms and exits: 0 when it passed, 1 otherwise with the
 * step it failed at and `diagnostics()` (lines about the browser). `progress()` tells the
 * current step, the steps and the screenshots so far.
 */
export async function runAll({ intro, main, totalTimeout, progress, diagnostics }) {
  const overall = setTimeout(() => {
    console.error(`FAILED: the run took longer than ${totalTimeout / 1000}s (at step ${progress().current})`);
    process.exit(1);
  }, totalTimeout);
  try {
    log(intro);
    await main();
    clearTimeout(overall);
    const { step, shots } = progress();
    log(`passed: ${step} steps, ${shots} screenshots`);
    process.exit(0);
  } catch (e) {
    clearTimeout(overall);
    console.error(`FAILED at step ${progress().current}: ${e.message}`);
    for (const line of diagnostics()) console.error(line);
    process.exit(1);
  }
}

/**
 * Runs `steps(page, context)` on the first page of a new Chromium (see {@link withBrowser}),
 * collecting its console and page errors into `consoleLines` (`console.<type>: <text>`,
 * `page error: <message>`). When a step fails, a screenshot and the text of `failurePage()`
 * (default: that first page) go to `artifacts`.
 */
export async function driveBrowser({ executablePath, timeout, extraArgs, artifacts, consoleLines, failurePage }, steps) {
  await withBrowser({ executablePath, timeout, extraArgs }, async (context) => {
    context.on('console', (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
    context.on('weberror', (e) => consoleLines.push(`page error: ${e.error().message}`));
    const page = context.pages()[0] ?? (await context.newPage());
    try {
      await steps(page, context);
    } catch (e) {
      await failureArtifacts(failurePage?.() ?? page, artifacts);
      throw e;
    }
  });
}

/** Logs in to the proxy at `base` with `token` on `page`, and waits for the dashboard. */
export async function proxyLogin(page, base, token) {
  await page.goto(`${base}/login`);
  await page.fill('#token', token);
  await Promise.all([page.waitForURL((u) => u.pathname === '/'), page.click('#login-submit')]);
}

/**
 * Runs `body(context)` in a new headless Chromium at `executablePath` (a profile of its own,
 * removed afterwards), with `extraArgs` besides the usual flags and `timeout` ms for each
 * action and page load.
 */
export async function withBrowser({ executablePath, timeout, extraArgs = [] }, body) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'guildnet-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extraArgs,
    ],
    viewport: { width: 1280, height: 900 },
    timeout,
  });
  try {
    context.setDefaultTimeout(timeout);
    return await body(context);
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}
