// Browser-test harness: a real headless Chromium (playwright-core, system browser) against a
// real capex-server whose URL is in CAPEX_BASE_URL. Four layers:
//   env      - what the project's test script must provide, failing loudly when missing
//   ApiClient - direct REST calls for setup (accounts, minting, a provider's ask), never for
//              what is under test
//   agent    - a real capex-agent process with the simulated GPU backend, per test
//   ui.*     - what a user does in the browser, one function per gesture
import { execFile, spawn } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(here, '..', '..');
export const RESULTS_DIR = join(here, '..', 'test-results');

/** Longest wait for one thing to show up in the page. */
export const UI_TIMEOUT_MS = 15_000;

// ---------------------------------------------------------------- env

/** The server under test. Unset means a misconfigured run: fail, never skip. */
export function baseUrl() {
  const url = process.env.CAPEX_BASE_URL;
  if (!url) {
    throw new Error(
      'CAPEX_BASE_URL is not set. The browser tests need a running capex-server (with Postgres) to test against; ' +
        "the project's test script starts one and sets it. By hand: CAPEX_BASE_URL=http://127.0.0.1:8080 npm run test:e2e",
    );
  }
  return url.replace(/\/+$/, '');
}

/** The operator account the server was started with (CAPEX_OPERATOR_EMAIL / _PASSWORD). */
export function operatorCredentials() {
  baseUrl(); // the missing server is the first thing to report
  const email = process.env.CAPEX_OPERATOR_EMAIL;
  const password = process.env.CAPEX_OPERATOR_PASSWORD;
  if (!email || !password) {
    throw new Error(
      'CAPEX_OPERATOR_EMAIL and CAPEX_OPERATOR_PASSWORD must be set to the operator account the server was started with ' +
        '(capex-server creates it from the same variables).',
    );
  }
  return { email, password };
}

export const CHROMIUM_PATH = process.env.CAPEX_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A fresh address per call, so tests never collide on a shared server. */
export function uniqueEmail(prefix = 'user') {
  return `${prefix}-${randomUUID().slice(0, 12)}@e2e.capex.test`;
}

export const PASSWORD = 'correct-horse-battery';

/**
 * "1.500000" -> "1.5": how the UI writes a price into test ids (see src/components/orders.tsx).
 * @param {string} price
 */
export function priceKey(price) {
  if (!price.includes('.')) return price;
  return price.replace(/0+$/, '').replace(/\.$/, '');
}

// ---------------------------------------------------------------- API (setup only)

export class ApiError extends Error {
  /** @param {number} status @param {any} problem */
  constructor(status, problem) {
    super(`HTTP ${status}: ${problem?.code ?? ''} ${problem?.detail ?? JSON.stringify(problem)}`);
    this.status = status;
    this.problem = problem;
  }
}

export class ApiClient {
  /** @param {string} base @param {string | null} token */
  constructor(base = baseUrl(), token = null) {
    this.base = base;
    this.token = token;
  }

  /**
   * @param {string} method @param {string} path
   * @param {{ body?: unknown, idempotent?: boolean }} [opts]
   * @returns {Promise<any>}
   */
  async call(method, path, opts = {}) {
    /** @type {Record<string, string>} */
    const headers = { Accept: 'application/json' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    if (opts.idempotent) headers['Idempotency-Key'] = randomUUID();
    const res = await fetch(`${this.base}/api/v1${path}`, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
    const text = await res.text();
    /** @type {any} */
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = { detail: text.slice(0, 200) };
    }
    if (!res.ok) throw new ApiError(res.status, json);
    return json;
  }

  /** @param {string} email @param {string} password @param {string[]} roles */
  register(email, password, roles) {
    return this.call('POST', '/auth/register', { body: { email, password, roles } });
  }

  /** Logs in and returns a client that sends the token. @param {string} email @param {string} password */
  async login(email, password) {
    const res = await this.call('POST', '/auth/login', { body: { email, password } });
    return new ApiClient(this.base, res.token);
  }

  /** @param {string} userId @param {string} amount */
  mint(userId, amount, memo = 'e2e funding') {
    return this.call('POST', '/operator/mint', { body: { user_id: userId, amount, memo }, idempotent: true });
  }

  /**
   * A provider's ask for GPUs of one of its hosts, good till cancel; returns the order with its fills.
   * @param {string} cls @param {{ hostId: string, gpus: number, price: string, hours?: number }} ask
   */
  placeAsk(cls, ask) {
    const until = new Date(Date.now() + (ask.hours ?? 24) * 3600_000).toISOString();
    return this.call('POST', `/markets/${encodeURIComponent(cls)}/orders`, {
      body: { side: 'ask', host_id: ask.hostId, gpus: ask.gpus, price: ask.price, tif: 'gtc', available_until: until },
      idempotent: true,
    });
  }

  /** The market class the trading tests use: CAPEX_TEST_CLASS, else the first listed, else H100-80GB. */
  async marketClass() {
    if (process.env.CAPEX_TEST_CLASS) return process.env.CAPEX_TEST_CLASS;
    try {
      const markets = await this.call('GET', '/markets');
      if (markets.items?.length) return markets.items[0].class;
    } catch {
      // the market list may not exist yet
    }
    return 'H100-80GB';
  }
}

/** A registered account. @param {string[]} roles @param {string} prefix */
export async function newUser(roles, prefix = roles[0]) {
  const api = new ApiClient();
  const email = uniqueEmail(prefix);
  const user = await api.register(email, PASSWORD, roles);
  return { email, password: PASSWORD, userId: user.user_id, api: await api.login(email, PASSWORD) };
}

/** A buyer with credits minted by the operator. @param {string} credits */
export async function fundedBuyer(credits = '1000') {
  const op = operatorCredentials();
  const buyer = await newUser(['buyer']);
  const operator = await new ApiClient().login(op.email, op.password);
  await operator.mint(buyer.userId, credits);
  return buyer;
}

// ---------------------------------------------------------------- agent

/**
 * The capex-agent binary: CAPEX_AGENT_BIN, else the debug build in CARGO_TARGET_DIR (or the
 * repository's target/). Missing means a misconfigured run: fail, never skip.
 */
export function agentBinary() {
  const target = resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR ?? 'target');
  const bin = process.env.CAPEX_AGENT_BIN ?? join(target, 'debug', 'capex-agent');
  if (!existsSync(bin)) {
    throw new Error(
      `capex-agent not found at ${bin}. The full-trade browser tests run a real agent: build it first ` +
        '(cargo build --workspace --bins) or point CAPEX_AGENT_BIN at it.',
    );
  }
  return bin;
}

const execFileAsync = promisify(execFile);
/** Agents still running, killed if the test process exits without stopping them. */
const liveAgents = new Set();
process.on('exit', () => {
  for (const child of liveAgents) child.kill('SIGKILL');
});

/**
 * Starts a real capex-agent for `provider` with simulated GPUs: `init` (host key), `register`
 * (with a fresh API key of the provider), then `run` with the process runtime on (jobs run
 * as plain processes, as on the demo hosts), reporting every second. Resolves once the host
 * is live and every GPU is in its latest report (`reporting`), so an ask for them can be placed at once.
 * @param {{ name: string }} t the test, to name the agent's log saved to test-results/
 * @param {{ email: string, api: ApiClient }} provider
 * @param {{ gpus?: string[], intervalS?: number }} [opts]
 */
export async function startSimulatedAgent(t, provider, opts = {}) {
  const bin = agentBinary();
  const base = baseUrl();
  const gpus = opts.gpus ?? ['H100', 'H100'];
  const dir = mkdtempSync(join(tmpdir(), 'capex-e2e-agent-'));
  const name = `e2e-${randomUUID().slice(0, 8)}`;
  const common = ['--state-dir', dir, '--backend', 'simulated', '--sim-gpus', gpus.join(','),
    '--interval-s', String(opts.intervalS ?? 1), '--name', name, '--log-format', 'pretty'];
  /** @param {string[]} args */
  const once = async (args) => {
    try {
      return (await execFileAsync(bin, [...common, ...args], { timeout: 60_000 })).stdout.trim();
    } catch (err) {
      const e = /** @type {any} */ (err);
      throw new Error(`capex-agent ${args[0]} failed: ${e.message}\n${e.stderr ?? ''}`);
    }
  };
  await once(['init']);
  const key = await provider.api.call('POST', '/auth/api-keys', { body: { name: `${name} agent` }, idempotent: true });
  const hostId = await once(['register', '--exchange', base, '--api-key', key.key]);

  const logPath = join(dir, 'agent.log');
  const log = openSync(logPath, 'a');
  const child = spawn(bin, [...common, 'run', '--exchange', base], {
    env: { ...process.env, CAPEX_AGENT_PROCESS_RUNTIME: 'true', RUST_LOG: process.env.RUST_LOG ?? 'info' },
    stdio: ['ignore', log, log],
  });
  closeSync(log); // the child has its own copy
  liveAgents.add(child);
  /** @type {Promise<void>} */
  const exited = new Promise((res) => child.once('exit', () => res()));
  child.once('exit', () => liveAgents.delete(child));
  const tail = () => {
    try {
      return readFileSync(logPath, 'utf8').split('\n').slice(-40).join('\n');
    } catch {
      return '';
    }
  };

  const agent = {
    hostId,
    dir,
    logTail: tail,
    /** Stops the agent (SIGTERM, then SIGKILL), keeps its log as an artifact, removes its state. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      mkdirSync(RESULTS_DIR, { recursive: true });
      try {
        copyFileSync(logPath, join(RESULTS_DIR, `${slug(t.name)}-agent.log`));
      } catch {
        // no log written
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };

  // Live: a valid report arrived and shows every GPU.
  const deadline = Date.now() + 4 * UI_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = tail();
      await agent.stop();
      throw new Error(`capex-agent run exited (${child.exitCode ?? child.signalCode}) before its host went live:\n${log}`);
    }
    const host = await provider.api.call('GET', `/hosts/${hostId}`).catch(() => null);
    if (host?.live && host.gpus.length === gpus.length && host.gpus.every((/** @type {any} */ g) => g.reporting)) {
      return { ...agent, gpuUuids: host.gpus.map((/** @type {any} */ g) => g.uuid) };
    }
    if (Date.now() > deadline) {
      const log = tail();
      await agent.stop();
      throw new Error(`host ${hostId} did not go live within ${4 * UI_TIMEOUT_MS} ms; agent log:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

// ---------------------------------------------------------------- browser

/** @type {import('playwright-core').Browser | null} */
let browser = null;

export async function launchBrowser() {
  if (!browser) {
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
  }
  return browser;
}

export async function closeBrowser() {
  await browser?.close();
  browser = null;
}

/** @param {string} name */
function slug(name) {
  return name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 80);
}

/**
 * Saves a full-page screenshot as test-results/<name>[-<suffix>].png; the suffix is kept
 * whole however long the name is, so several shots of one test do not overwrite each other.
 * @param {import('playwright-core').Page} page
 * @param {string} name
 * @param {string} [suffix]
 */
export async function screenshot(page, name, suffix = '') {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const path = join(RESULTS_DIR, `${slug(name)}${suffix ? `-${slug(suffix)}` : ''}.png`);
  await page.screenshot({ path, fullPage: true }).catch(() => undefined);
  return path;
}

/**
 * Runs `fn` with a fresh browser context (its own sessionStorage, so its own user) and
 * saves a screenshot named after the test when it ends, passed or failed. Uncaught page
 * errors fail the test.
 * @template T
 * @param {{ name: string }} t
 * @param {(page: import('playwright-core').Page) => Promise<T>} fn
 * @param {string} [suffix]
 * @returns {Promise<T>}
 */
export async function withPage(t, fn, suffix = '') {
  const base = baseUrl();
  const b = await launchBrowser();
  const context = await b.newContext({ baseURL: base, viewport: { width: 1440, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  /** @type {Error[]} */
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err));
  try {
    const result = await fn(page);
    if (pageErrors.length) throw new Error(`uncaught error in the page: ${pageErrors[0].stack ?? pageErrors[0]}`);
    return result;
  } finally {
    await screenshot(page, t.name, suffix);
    await context.close();
  }
}

// ---------------------------------------------------------------- UI gestures

/** @typedef {import('playwright-core').Page} Page */

/**
 * Retries `check` until it passes or `ms` run out (the page and the API move with the live feed).
 * @template T @param {() => Promise<T>} check @param {number} [ms] @returns {Promise<T>}
 */
export async function eventually(check, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

export const ui = {
  /** @param {Page} page @param {string} hash e.g. "#/wallet" */
  async go(page, hash) {
    await page.goto(`/${hash}`);
  },

  /** @param {Page} page @param {string} testid */
  byTestId(page, testid) {
    return page.locator(`[data-testid="${testid}"]`);
  },

  /** Registers through the form (which logs straight in). @param {Page} page @param {string} email @param {string} password @param {string[]} roles */
  async register(page, email, password, roles = ['buyer']) {
    await ui.go(page, '#/register');
    await page.getByLabel('Email', { exact: true }).fill(email);
    await page.getByLabel('Password', { exact: true }).fill(password);
    const buyer = ui.byTestId(page, 'register-role-buyer');
    const provider = ui.byTestId(page, 'register-role-provider');
    await buyer.setChecked(roles.includes('buyer'));
    await provider.setChecked(roles.includes('provider'));
    await ui.byTestId(page, 'register-submit').click();
    await ui.byTestId(page, 'current-user').filter({ hasText: email }).waitFor();
  },

  /** @param {Page} page @param {string} email @param {string} password */
  async login(page, email, password) {
    await ui.go(page, '#/login');
    await page.getByLabel('Email', { exact: true }).fill(email);
    await page.getByLabel('Password', { exact: true }).fill(password);
    await ui.byTestId(page, 'login-submit').click();
    await ui.byTestId(page, 'current-user').filter({ hasText: email }).waitFor();
  },

  /** @param {Page} page */
  async logout(page) {
    await ui.byTestId(page, 'logout').click();
    await ui.byTestId(page, 'login-form').waitFor();
  },

  /** @param {Page} page @param {string} cls */
  async openMarket(page, cls) {
    await ui.go(page, `#/markets/${encodeURIComponent(cls)}`);
    await ui.byTestId(page, 'market-class').filter({ hasText: cls }).waitFor();
  },

  /**
   * Fills the bid form on an open market page (does not submit).
   * @param {Page} page
   * @param {{ gpus: number, hours: number, price: string, command?: string }} bid
   */
  async fillBid(page, bid) {
    // By label, so the form's <label for> wiring is exercised too.
    const form = ui.byTestId(page, 'bid-form');
    await form.getByLabel('GPUs', { exact: true }).fill(String(bid.gpus));
    await form.getByLabel('Max hours', { exact: true }).fill(String(bid.hours));
    await form.getByLabel('Limit price (credits / GPU-hour)').fill(bid.price);
    if (bid.command !== undefined) await ui.byTestId(page, 'bid-command').fill(bid.command);
  },

  /** @param {Page} page @param {{ gpus: number, hours: number, price: string, command?: string }} bid */
  async placeBid(page, bid) {
    await ui.fillBid(page, bid);
    await ui.byTestId(page, 'bid-submit').click();
  },

  /** Waits until the live feed (SSE) is connected. @param {Page} page */
  async waitLive(page, timeout = UI_TIMEOUT_MS) {
    try {
      await page.locator('.shell[data-live="open"]').waitFor({ timeout });
    } catch {
      const state = await page.locator('.shell').getAttribute('data-live');
      throw new Error(`the live feed did not connect within ${timeout} ms (state "${state}"): is GET /api/v1/stream served?`);
    }
  },

  /**
   * Waits for a form's outcome: the element `expected` shows, or else an error does (the form's
   * top error `formError`, or any field error), which fails with the error's own words.
   * @param {Page} page @param {string} expected @param {string} formError
   */
  async outcome(page, expected, formError) {
    const any = page.locator(
      `[data-testid="${expected}"], [data-testid="${formError}"], [data-testid^="error-"]`,
    );
    await any.first().waitFor();
    if (await ui.byTestId(page, expected).count()) return ui.byTestId(page, expected);
    const shown = (await any.first().textContent())?.trim();
    throw new Error(`expected ${expected}, but the form said: ${shown}`);
  },

  /** The text a numeric test id shows, e.g. wallet-available. @param {Page} page @param {string} testid */
  async text(page, testid) {
    return (await ui.byTestId(page, testid).first().textContent())?.trim() ?? '';
  },
};
