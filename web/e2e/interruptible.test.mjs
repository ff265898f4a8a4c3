// Issue 18 in the browser: an ask that also sells its idle GPUs for interruptible use, an
// interruptible bid placed through the bid form, the interruptible book, the market row and
// the provider's GPU states as the API has them; then an on-demand bid preempts the job and
// the job page and GPU states say `preempting` as the API does.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  closeBrowser,
  eventually,
  fundedBuyer,
  newUser,
  screenshot,
  startSimulatedAgent,
  ui,
  withPage,
} from './harness.mjs';

const CLASS = 'A100-40GB';

describe('interruptible capacity', () => {
  /** @type {any} */ let provider;
  /** @type {any} */ let spot;
  /** @type {any} */ let urgent;
  /** @type {any} */ let agent;
  /** @type {any} */ let ask;
  /** @type {string} */ let spotLease = '';

  before(async () => {
    provider = await newUser(['provider']);
    spot = await fundedBuyer('100');
    urgent = await fundedBuyer('100');
    agent = await startSimulatedAgent({ name: 'interruptible' }, provider, { gpus: ['A100', 'A100'] });
    const until = new Date(Date.now() + 24 * 3600_000).toISOString();
    ask = await provider.api.call('POST', `/markets/${CLASS}/orders`, {
      body: { side: 'ask', host_id: agent.hostId, gpus: 2, price: '3', interruptible_price: '1.5', tif: 'gtc', available_until: until },
      idempotent: true,
    });
    assert.equal(ask.interruptible_price, '1.5');
  });

  after(async () => {
    await provider?.api.call('DELETE', `/orders/${ask?.order_id}`).catch(() => undefined);
    await agent?.stop();
    await closeBrowser();
  });

  test('an interruptible bid from the form trades at the interruptible price; the books show both sides', async (t) => {
    await withPage(t, async (page) => {
      await ui.login(page, spot.email, spot.password);
      await ui.openMarket(page, CLASS);
      await ui.byTestId(page, 'interruptible-ask-1.5').waitFor();
      await ui.fillBid(page, { gpus: 1, hours: 1, price: '2', command: 'sleep 600' });
      await ui.byTestId(page, 'bid-priority').selectOption('interruptible');
      await ui.byTestId(page, 'bid-submit').click();
      const placed = await ui.outcome(page, 'bid-placed', 'bid-error');
      assert.match((await placed.textContent()) ?? '', /filled.*\(interruptible\)/);
      const orders = await spot.api.call('GET', '/orders?status=all');
      const bid = orders.items.find((/** @type {any} */ o) => o.class === CLASS && o.side === 'bid');
      assert.equal(bid.priority, 'interruptible');
      assert.equal(bid.fills[0].price, '1.5', 'traded at the ask’s interruptible price, not the bid’s limit');
      spotLease = bid.fills[0].lease_id;

      // The ask still offers both GPUs on demand; one is in interruptible use, one idle.
      const book = await eventually(async () => {
        const book = await spot.api.call('GET', `/markets/${CLASS}/book`);
        assert.equal(book.interruptible_gpus_in_use, 1);
        assert.equal((await ui.text(page, 'interruptible-in-use')).replace(/\s+/g, ' '), '· 1 GPU in interruptible use');
        return book;
      });
      assert.deepEqual(book.asks, [{ price: '3', gpus: 2, orders: 1 }]);
      assert.deepEqual(book.interruptible_asks, [{ price: '1.5', gpus: 1, orders: 1 }]);
      assert.equal(await ui.text(page, 'best-interruptible-ask'), '1.50');
      assert.equal(await ui.byTestId(page, 'ladder-ask-3').count(), 1);
      await screenshot(page, t.name, 'market');

      await ui.go(page, '#/markets');
      const markets = await spot.api.call('GET', '/markets');
      const market = markets.items.find((/** @type {any} */ m) => m.class === CLASS);
      assert.equal(market.best_interruptible_ask, '1.5');
      assert.equal(market.interruptible_gpus, 1);
      assert.equal(await ui.text(page, `market-interruptible-ask-${CLASS}`), '1.50');
      assert.equal(await ui.text(page, `market-interruptible-gpus-${CLASS}`), '1');
      await screenshot(page, t.name, 'markets');
    });
  });

  test('the provider sees the GPU in interruptible use, then preempting, as the API says', async (t) => {
    assert.ok(spotLease, 'the first test traded');
    await withPage(t, async (page) => {
      await ui.login(page, provider.email, provider.password);
      await ui.go(page, '#/provider');
      const card = ui.byTestId(page, `host-${agent.hostId}`);
      /** @param {string} wanted */
      const statesMatch = (/** @type {string[]} */ ...wanted) =>
        eventually(async () => {
          const host = await provider.api.call('GET', `/hosts/${agent.hostId}`);
          const states = host.gpus.map((/** @type {any} */ g) => g.state).sort();
          assert.ok(wanted.some((w) => states.includes(w)), `API states ${states}`);
          for (const g of host.gpus) {
            const cell = card.locator(`[data-testid="host-gpu-${g.uuid}"] [data-testid="gpu-state"]`);
            assert.equal(await cell.getAttribute('data-state'), g.state, `GPU ${g.uuid}`);
          }
          return host;
        });
      const before = await statesMatch('interruptible');
      const held = before.gpus.find((/** @type {any} */ g) => g.state === 'interruptible');
      assert.equal(held.lease_id, spotLease);
      assert.equal(held.order_id, ask.order_id, 'still offered on demand by its ask');
      await screenshot(page, t.name, 'interruptible');

      // An on-demand buyer takes both GPUs: the interruptible job is preempted.
      const bid = await urgent.api.call('POST', `/markets/${CLASS}/orders`, {
        body: { side: 'bid', gpus: 2, max_hours: '1', price: '3', tif: 'ioc', job: { command: ['sleep', '600'], env: {} } },
        idempotent: true,
      });
      assert.equal(bid.status, 'filled');
      const job = await spot.api.call('GET', `/jobs/${spotLease}`);
      assert.ok(['preempting', 'ended'].includes(job.job_state), JSON.stringify(job));
      // A job that exits at SIGTERM (sleep dies with its process group) hands its GPU over
      // at once: the page shows preempting or, already, the on-demand lease.
      await statesMatch('preempting', 'leased');
      await screenshot(page, t.name, 'preempting');
    });
  });

  test('the preempted job’s page says so, with its deadline', async (t) => {
    await withPage(t, async (page) => {
      await ui.login(page, spot.email, spot.password);
      await ui.go(page, `#/jobs/${spotLease}`);
      const job = await spot.api.call('GET', `/jobs/${spotLease}`);
      assert.ok(['preempting', 'ended'].includes(job.job_state), JSON.stringify(job));
      await page.locator(`[data-testid="job-lifecycle"][data-state="${job.job_state}"]`).waitFor();
      assert.match(await ui.text(page, 'job-priority'), /interruptible/);
      assert.ok(job.preempt_deadline, 'the API gives the deadline');
      await ui.byTestId(page, 'job-preempt-deadline').waitFor();
      await screenshot(page, t.name, 'job');
    });
  });
});
