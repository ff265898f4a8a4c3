// Browser-test harness: a real headless Chromium (playwright-core, system browser) against a
// real capex-server whose URL is in CAPEX_BASE_URL. Three layers, so later scenarios (a live
// simulated agent, a crossing ask, a job with streaming logs) only add functions here:
//   env      - what the project's test script must provide, failing loudly when missing
//   ApiClient - direct REST calls for setup (accounts, minting), never for what is under test
//   ui.*     - what a user does in the browser, one function per gesture
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
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
 * @param {import('playwright-core').Page} page
 * @param {string} name
 */
export async function screenshot(page, name) {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const path = join(RESULTS_DIR, `${slug(name)}.png`);
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
    await screenshot(page, `${t.name}${suffix ? `-${suffix}` : ''}`);
    await context.close();
  }
}

// ---------------------------------------------------------------- UI gestures

/** @typedef {import('playwright-core').Page} Page */

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

// Scenarios still to come, once the server has hosts, agents and jobs, build on the above:
//   startSimulatedAgent({ provider, gpus, cls })   spawn capex-agent with the simulated probe
//   ui.placeAsk(page, { host, gpus, price, until }) on the market page's ask form
//   ui.openJob(page, jobId) / ui.waitForLogLine(page, text) on the Jobs page
