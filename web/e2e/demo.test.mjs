// Issue 19, item 6: a fresh demo comes alive at once. Starts what scripts/start starts —
// capex-server in demo mode on a new database and scripts/demo-agents (simulated hosts
// and the demo trader) — and requires, from the moment the server first serves the page:
// every market with demo supply has a trade within 15 s, the trader bids in no market
// without supply, and the tape keeps moving. The market page's tape is checked against
// the API's trades.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ApiClient, CHROMIUM_ARGS, CHROMIUM_PATH, agentBinary, screenshot, ui } from './harness.mjs';
import { chromium } from 'playwright-core';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ALIVE_WITHIN_MS = 15_000;
const run = promisify(execFile);

/** @returns {Promise<number>} */
function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = /** @type {any} */ (s.address()).port;
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

describe('a fresh demo', () => {
  /** @type {import('node:child_process').ChildProcess[]} */
  const children = [];
  /** @type {string | null} */ let db = null;
  /** @type {string | null} */ let stateDir = null;
  /** @type {import('playwright-core').Browser | null} */ let browser = null;
  const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

  after(async () => {
    for (const child of children.reverse()) {
      // Each runs in its own process group: the demo-agents script's agents and trader go too.
      try {
        if (child.pid) process.kill(-child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    await sleep(1500);
    for (const child of children) {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await browser?.close();
    if (db) await run('psql', [url, '-qtAc', `drop database if exists ${db} with (force)`]).catch(() => undefined);
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  test('every market with demo supply trades within 15 s of the page being served', { timeout: 180_000 }, async (t) => {
    const bin = dirname(agentBinary());
    db = `capex_demo_e2e_${process.pid}`;
    await run('psql', [url, '-qtAc', `create database ${db}`]);
    stateDir = mkdtempSync(join(tmpdir(), 'capex-e2e-demo-'));
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const logPath = join(stateDir, 'demo.log');
    const log = openSync(logPath, 'a');
    /** @type {Record<string, string | undefined>} */
    const env = {
      ...process.env,
      DATABASE_URL: `${url.replace(/\/[^/]*$/, '')}/${db}`,
      CAPEX_BIND: `127.0.0.1:${port}`,
      CAPEX_DEMO: 'true',
      CAPEX_WEB_DIR: join(REPO_ROOT, 'web', 'dist'),
      CAPEX_DEMO_STATE_DIR: stateDir,
      CAPEX_BIN_DIR: bin,
      RUST_LOG: 'warn',
    };
    // The browser tests' operator is not this demo's.
    delete env.CAPEX_OPERATOR_EMAIL;
    delete env.CAPEX_OPERATOR_PASSWORD;
    const server = spawn(join(bin, 'capex-server'), [], { cwd: REPO_ROOT, env, stdio: ['ignore', log, log], detached: true });
    children.push(server);
    const logTail = () => readFileSync(logPath, 'utf8').split('\n').slice(-40).join('\n');
    // As scripts/start: the agents start once the server is healthy.
    let servedAt = 0;
    for (let i = 0; i < 300 && !servedAt; i++) {
      const ok = await fetch(`${base}/`).then((r) => r.ok).catch(() => false);
      if (ok) servedAt = Date.now();
      else await sleep(100);
    }
    assert.ok(servedAt, `the demo server never served the page:\n${logTail()}`);
    const agents = spawn(join(REPO_ROOT, 'scripts', 'demo-agents'), [base], {
      cwd: REPO_ROOT, env, stdio: ['ignore', log, log], detached: true,
    });
    children.push(agents);
    closeSync(log);

    const api = new ApiClient(base);
    /** @type {Record<string, number>} */
    const firstTradeMs = {};
    /** @type {string[]} */
    let supplied = [];
    while (Date.now() - servedAt < ALIVE_WITHIN_MS + 1000) {
      const markets = await api.call('GET', '/markets');
      supplied = markets.items
        .filter((/** @type {any} */ m) => Object.values(m.offered_gpus_by_level ?? {}).some((n) => Number(n) > 0) || firstTradeMs[m.class])
        .map((/** @type {any} */ m) => m.class);
      for (const m of markets.items) {
        if (firstTradeMs[m.class]) continue;
        const trades = await api.call('GET', `/markets/${encodeURIComponent(m.class)}/trades?limit=200`);
        const first = trades.items.at(-1);
        if (first) firstTradeMs[m.class] = Date.parse(first.at) - servedAt;
      }
      await sleep(500);
    }
    const all = (await api.call('GET', '/markets')).items.map((/** @type {any} */ m) => m.class);
    t.diagnostic(`first trade per market, ms after the page was served: ${JSON.stringify(firstTradeMs)}`);
    // The demo's hosts cover every default market.
    assert.deepEqual([...all].sort(), ['A100-40GB', 'A100-80GB', 'H100-80GB', 'H200-141GB', 'L40S-48GB', 'RTX4090-24GB']);
    for (const cls of all) {
      assert.ok(firstTradeMs[cls] !== undefined, `${cls} had no trade within 15 s (supplied: ${supplied}):\n${logTail()}`);
      assert.ok(firstTradeMs[cls] <= ALIVE_WITHIN_MS, `${cls} first traded ${firstTradeMs[cls]} ms after start`);
    }

    // A lively tape: 30 s on, every market has traded again.
    await sleep(Math.max(0, servedAt + 40_000 - Date.now()));
    for (const cls of all) {
      const trades = await api.call('GET', `/markets/${encodeURIComponent(cls)}/trades?limit=200`);
      assert.ok(trades.items.length >= 2, `${cls}: ${trades.items.length} trade(s) in 40 s`);
      const newest = Date.parse(trades.items[0].at);
      assert.ok(Date.now() - newest < 25_000, `${cls}: last trade ${Date.now() - newest} ms ago`);
    }

    // What a visitor sees: alice's market page with a tape that matches the API.
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
    const context = await browser.newContext({ baseURL: base, viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    try {
      await ui.login(page, 'alice@capex.demo', 'capex-demo');
      await ui.go(page, '#/markets');
      await ui.byTestId(page, 'markets-table').waitFor();
      await screenshot(page, t.name, 'markets');
      await ui.openMarket(page, 'RTX4090-24GB');
      await ui.byTestId(page, 'trade-row').first().waitFor();
      const trades = await api.call('GET', '/markets/RTX4090-24GB/trades?limit=50');
      const shown = await ui.byTestId(page, 'trade-row').count();
      assert.ok(shown >= 2 && Math.abs(shown - Math.min(trades.items.length, 50)) <= 2, `tape ${shown} vs API ${trades.items.length}`);
      await screenshot(page, t.name, 'market');
    } finally {
      await context.close();
    }
  });
});
