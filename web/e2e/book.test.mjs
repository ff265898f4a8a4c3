// Issue 19, items 3 and 4: a best bid above the best ask that cannot trade (the bid wants
// 2 GPUs, the ask has 1) is explained with sizes and hosts, and the depth chart draws the
// cumulative steps of the API's book.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { closeBrowser, fundedBuyer, newUser, screenshot, startSimulatedAgent, ui, withPage } from './harness.mjs';

const CLASS = 'L40S-48GB';

describe('top of book and depth', () => {
  /** @type {any} */ let provider;
  /** @type {any} */ let buyer;
  /** @type {any} */ let agent;
  /** @type {string[]} */ const orders = [];

  before(async () => {
    provider = await newUser(['provider']);
    buyer = await fundedBuyer('100');
    agent = await startSimulatedAgent({ name: 'top of book' }, provider, { gpus: ['L40S'] });
    orders.push((await provider.api.placeAsk(CLASS, { hostId: agent.hostId, gpus: 1, price: '0.45' })).order_id);
    for (const [gpus, price] of [[2, '0.46'], [1, '0.4'], [3, '0.38']]) {
      const bid = await buyer.api.call('POST', `/markets/${CLASS}/orders`, {
        body: { side: 'bid', gpus, max_hours: '1', price, tif: 'gtc', job: { command: ['true'], env: {} } },
        idempotent: true,
      });
      assert.equal(bid.status, 'open', JSON.stringify(bid));
      orders.push(bid.order_id);
    }
  });

  after(async () => {
    for (const id of orders) {
      await provider.api.call('DELETE', `/orders/${id}`).catch(() => buyer.api.call('DELETE', `/orders/${id}`)).catch(() => undefined);
    }
    await agent?.stop();
    await closeBrowser();
  });

  test('a bid above an ask it cannot trade with says why, with sizes and the host', async (t) => {
    const top = await buyer.api.call('GET', `/markets/${CLASS}/top`);
    assert.equal(top.crossed, true);
    assert.equal(top.crossing[0].reasons[0].code, 'bid_wants_more_gpus');
    await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);
      await ui.openMarket(page, CLASS);
      const summary = ui.byTestId(page, 'top-summary');
      await summary.waitFor();
      assert.equal(await summary.getAttribute('data-crossed'), 'true');
      assert.equal((await summary.textContent())?.trim(), top.summary);
      const host = (await provider.api.call('GET', `/hosts/${agent.hostId}`)).name;
      assert.match(top.summary, new RegExp(`0\\.46 for 2 GPUs.*0\\.45 for 1 GPU on ${host}`));
      // The best ask's row: its size and host, as the API has them.
      const bestAsk = ui.byTestId(page, 'top-ask').first();
      assert.equal(await bestAsk.getAttribute('data-order'), top.asks[0].order_id);
      assert.equal((await bestAsk.locator('[data-testid="top-gpus"]').textContent())?.trim(), '1');
      assert.equal((await bestAsk.locator('[data-testid="top-host"]').textContent())?.trim(), host);
      const bestBid = ui.byTestId(page, 'top-bid').first();
      assert.equal((await bestBid.locator('[data-testid="top-gpus"]').textContent())?.trim(), '2');
      // The pair and its reason, in the API's words.
      const pair = page.locator(
        `[data-testid="crossing-pair"][data-bid="${top.crossing[0].bid_order_id}"][data-ask="${top.crossing[0].ask_order_id}"]`,
      );
      const reason = pair.locator('[data-testid="crossing-reason"]');
      assert.equal(await reason.getAttribute('data-code'), 'bid_wants_more_gpus');
      assert.equal((await reason.textContent())?.trim(), top.crossing[0].reasons[0].message);
      assert.match((await ui.text(page, 'spread')) ?? '', /cannot trade/);
      await screenshot(page, t.name, 'market');
    });
  });

  test('the depth chart steps through the cumulative GPUs of each side of the book', async (t) => {
    const book = await buyer.api.call('GET', `/markets/${CLASS}/book`);
    /** @param {{ price: string, gpus: number }[]} levels */
    const steps = (levels) => {
      let sum = 0;
      return levels.map((l) => `${l.price}:${(sum += l.gpus)}`).join(' ');
    };
    assert.equal(steps(book.bids), '0.46:2 0.4:3 0.38:6');
    await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);
      await ui.openMarket(page, CLASS);
      const chart = ui.byTestId(page, 'depth-chart');
      await chart.locator('canvas').waitFor();
      assert.equal(await chart.getAttribute('data-bid-steps'), steps(book.bids));
      assert.equal(await chart.getAttribute('data-ask-steps'), steps(book.asks));
      // Filled areas: both colours are painted over a good part of the plot, not two dots.
      const painted = await chart.locator('canvas').evaluate((canvas) => {
        const c = /** @type {HTMLCanvasElement} */ (canvas);
        const data = c.getContext('2d')?.getImageData(0, 0, c.width, c.height).data ?? [];
        let green = 0;
        let red = 0;
        for (let i = 0; i < data.length; i += 4) {
          const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
          if (a === 0) continue;
          if (g > r + 20 && g > 60 && b > 50) green++;
          if (r > g + 40 && r > 60) red++;
        }
        return { green, red, total: c.width * c.height };
      });
      assert.ok(painted.green > painted.total * 0.03, `bid area ${JSON.stringify(painted)}`);
      assert.ok(painted.red > painted.total * 0.005, `ask area ${JSON.stringify(painted)}`);
      await screenshot(page, t.name, 'depth');
    });
  });
});
