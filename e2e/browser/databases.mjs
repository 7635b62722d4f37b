// The dashboard's Databases section in a real browser (Debian's headless Chromium driven by
// playwright-core): alice logs in and sees her GuildDatabase with its status, browses the
// rows of shop.items, inserts a row, edits it (the change shows in the live changes view),
// deletes another, exports the table as NDJSON and CSV, and imports a file. A screenshot of
// every step lands in GUILDNET_ARTIFACTS.
//
//   GUILDNET_PROXY_URL=http://127.0.0.1:18090 GUILDNET_ALICE_TOKEN=... GUILDNET_DATABASE=shelf-1 \
//   GUILDNET_ARTIFACTS=target/e2e-artifacts/databases node e2e/browser/databases.mjs
//
// Exits 0 when every step passed, 1 otherwise. Never downloads a browser: GUILDNET_CHROMIUM
// (default /usr/bin/chromium) must exist.

import fs from 'node:fs';
import path from 'node:path';

import { Steps, artifactsDir, check, chromiumPath, driveBrowser, env, proxyLogin, runAll } from './harness.mjs';

const STEP_TIMEOUT = 60_000;
const TOTAL_TIMEOUT = 240_000;

const base = env('GUILDNET_PROXY_URL').replace(/\/+$/, '');
const token = env('GUILDNET_ALICE_TOKEN').trim();
const name = env('GUILDNET_DATABASE');
const artifacts = artifactsDir();
const executablePath = chromiumPath();
const tid = (id) => `[data-testid="${id}"]`;

const console_ = [];
let page;
const record = new Steps(artifacts);
const shot = (label) => record.shot(page, label);
const run = (label, body) => record.run(label, body);

/** Waits until `fn(arg)` is truthy in the page (no fixed sleeps), naming what it waited for. */
async function until(what, fn, arg) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: STEP_TIMEOUT, polling: 100 });
    return await handle.jsonValue();
  } catch (e) {
    throw new Error(`waited ${STEP_TIMEOUT / 1000}s for ${what}: ${e.message.split('\n')[0]}`);
  }
}

const rowKeys = () => until('rows', () => {
  const rows = [...document.querySelectorAll('#rows-body tr')];
  return document.body.dataset.dataTable === 'shop.items' && rows.map((r) => r.dataset.key).join(',');
});

const main = () => driveBrowser(
  { executablePath, timeout: STEP_TIMEOUT, artifacts, consoleLines: console_ },
  async (first) => { page = first; page.on('dialog', (d) => d.accept()); await steps(); },
);

async function steps() {
  await run('alice logs in and sees her database with its status', async () => {
    await proxyLogin(page, base, token);
    await until('the databases to load', () => document.body.dataset.databasesLoaded === 'true');
    await page.locator(tid(`gdb-row-${name}`)).waitFor();
    const phase = await page.locator(tid(`gdb-phase-${name}`)).textContent();
    check(phase === 'Running (1/1)', `the database shows Running with its server: ${JSON.stringify(phase)}`);
    await shot('databases');
  });

  await run('Browse shows the rows of shop.items and follows its changes', async () => {
    await page.click(tid(`gdb-browse-${name}`));
    const keys = await rowKeys();
    check(keys === 's1,s2,s3', `the rows in key order: ${keys}`);
    check((await page.locator(tid('data-db')).inputValue()) === 'shop', 'database shop chosen');
    await until('the changes feed open', () => document.getElementById('changes-live').dataset.live === 'true');
    await shot('rows');
  });

  await run('a row is inserted from the form', async () => {
    await page.fill(tid('row-json'), JSON.stringify({ sku: 's9', shelf: 9 }));
    await page.click(tid('row-save'));
    const keys = await until('the new row', () => {
      const ks = [...document.querySelectorAll('#rows-body tr')].map((r) => r.dataset.key);
      return ks.includes('s9') && ks.join(',');
    });
    check(keys === 's1,s2,s3,s9', `the page shows the new row: ${keys}`);
    await until('the insert in the changes view', () =>
      [...document.querySelectorAll('[data-testid="change"]')].some((c) => c.dataset.key === 's9' && c.dataset.what === 'inserted'));
  });

  await run('the row is edited, and the change shows live', async () => {
    await page.click(tid('row-edit-s9'));
    const text = await page.locator(tid('row-json')).inputValue();
    check(JSON.parse(text).sku === 's9', `the form holds the row: ${text}`);
    await page.fill(tid('row-json'), JSON.stringify({ sku: 's9', shelf: 9, colour: 'blue' }));
    await page.click(tid('row-save'));
    await until('the edit in the changes view', () =>
      [...document.querySelectorAll('[data-testid="change"]')].some((c) => c.dataset.key === 's9' && c.dataset.what === 'changed'));
    await until('the row to show its new field', () =>
      document.querySelector('[data-testid="row-s9"]')?.innerText.includes('blue'));
    await shot('edited');
  });

  await run('a row is deleted', async () => {
    await page.click(tid('row-delete-s2'));
    await until('s2 gone', () => ![...document.querySelectorAll('#rows-body tr')].some((r) => r.dataset.key === 's2'));
  });

  await run('the table is exported as NDJSON and CSV', async () => {
    for (const [id, type] of [['export-ndjson', 'application/x-ndjson'], ['export-csv', 'text/csv']]) {
      const [download] = await Promise.all([page.waitForEvent('download'), page.click(tid(id))]);
      const file = path.join(artifacts, download.suggestedFilename());
      await download.saveAs(file);
      const text = fs.readFileSync(file, 'utf8');
      check(download.suggestedFilename().startsWith('shop.items.'), `named after the table: ${download.suggestedFilename()}`);
      if (type === 'text/csv') check(text.split('\n')[0] === 'sku,colour,shelf', `a CSV header: ${text.split('\n')[0]}`);
      else check(text.trim().split('\n').map((l) => JSON.parse(l).sku).join(',') === 's1,s3,s9', `every row: ${text}`);
    }
  });

  await run('a file is imported', async () => {
    const file = path.join(artifacts, 'import.ndjson');
    fs.writeFileSync(file, '{"sku":"i1","shelf":11}\n{"sku":"i2","shelf":12}\n');
    await page.setInputFiles(tid('import-file'), file);
    await until('the imported rows', () => {
      const ks = [...document.querySelectorAll('#rows-body tr')].map((r) => r.dataset.key);
      return ks.includes('i1') && ks.includes('i2');
    });
    const status = await page.locator(tid('status')).textContent();
    check(/2 inserted/.test(status), `the import is reported: ${JSON.stringify(status)}`);
    await shot('imported');
  });
}

await runAll({
  intro: `databases: the dashboard's data of ${name} at ${base}`,
  main,
  totalTimeout: TOTAL_TIMEOUT,
  progress: () => record.progress(),
  diagnostics: () => console_,
});
